"""A job's alembic run on its target, watched and, when it gave up waiting for a lock, tried
again where that is safe.

While alembic runs against PostgreSQL, a thread asks the server every half second what
alembic's sessions (named `retort job #N`) wait for and who holds it (`core/lock_waits.py`):
the job page shows it live (Job.lock_wait) and the log says it once per blocker.

A run that fails on a lock timeout is tried again — up to the plan's attempts, after the
plan's backoff, doubled each time — only when the version table proves where it stopped and
nothing of the failed revision stayed: PostgreSQL ran it in a transaction and rolled it back.
A revision that works outside a transaction (`autocommit_block`, CONCURRENTLY) may have
committed part of its work: it is not tried again, and the failure says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection as dashboard_connection
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from environments import safe_runs
from environments.core import failures, index_checks, lock_waits
from environments.core.run_limits import RunLimits, describe
from environments.core.runner import RunnerError
from environments.core.scripts import ScriptIndex
from environments.joblog import JobLog
from environments.models import Job
from environments.revision_analysis import revision_outside_transaction

FIRST_LOOK_SECONDS = 0.25  # a run that ends sooner is never asked about
LOOK_EVERY_SECONDS = 0.5


class RunFailed(Exception):
    """The run failed; the sentence says why, where the database is, and what next."""

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# (heads, None) or ((), why it cannot be read): the version table now, on the lock's session
HeadsNow = Callable[[], tuple[tuple[str, ...], str | None]]


def run_alembic(
    job: Job,
    url: str,
    log: JobLog,
    args: list[str],
    limits: RunLimits | None,
    *,
    index: ScriptIndex | None,
    session: Connection | None,
    heads_now: HeadsNow,
) -> None:
    """Run alembic with `args` on the job's target until it succeeds; raises RunFailed."""
    environment = job.environment
    attempts = limits.attempts if limits is not None and session is not None else 1
    if limits is not None:
        log.add(f"Timeouts on alembic's connection: {limits.sentence()}; {limits.retries()}.")
    command = " ".join([*environment.project.command, *environment.alembic_args(args)])
    indexes = IndexCheck(session if _builds_concurrently(job, index) else None)
    for attempt in range(1, attempts + 1):
        log.add(f"$ {command}" if attempt == 1 else f"Attempt {attempt} of {attempts}: $ {command}")
        with Watch(session, job, log) as watch:
            try:
                result = environment.run_alembic(
                    args,
                    url=url,
                    timeout=settings.RETORT_JOB_TIMEOUT,
                    on_line=log.add,
                    extra_env=safe_runs.alembic_env(limits, job),
                )
            except RunnerError as exc:
                raise RunFailed(str(exc)) from None
        left = indexes.left()
        if result.ok:
            if left:
                log.add(f"WARNING: {left}")
            return
        failure = failures.read_failure(result.output, list(job.revisions))
        heads, unreadable = heads_now()
        rolls_back = limits is not None  # PostgreSQL: transactional DDL
        if limits is None or not lock_waits.is_lock_timeout(result.output):
            described = failures.describe(
                failure,
                exit_code=result.exit_code,
                planned=len(job.revisions),
                heads=heads,
                unreadable=unreadable,
                rolls_back=rolls_back,
                backup_id=job.backup_id,
            )
            raise RunFailed(f"{described} {left}".strip(), exit_code=result.exit_code)
        state = failures.state_now(failure, heads=heads, unreadable=unreadable, rolls_back=True)
        refusal = _why_not_again(job, failure, heads, unreadable, index)
        if refusal or attempt == attempts or left:
            gave_up = _gave_up(job, failure, limits, attempt, watch.seen, state, refusal)
            raise RunFailed(f"{gave_up} {left}".strip(), exit_code=result.exit_code)
        delay = limits.delay(attempt)
        log.add(
            f"Attempt {attempt} of {attempts} gave up waiting for a lock after lock_timeout "
            f"{describe(limits.lock_timeout)}{_who(watch.seen)}.{state} Trying again in "
            f"{describe(delay) if delay else 'no time'}."
        )
        log.flush()
        time.sleep(delay)


def _builds_concurrently(job: Job, index: ScriptIndex | None) -> bool:
    """A revision of the run works outside a transaction (CONCURRENTLY, autocommit_block)."""
    for revision_id in job.revisions:
        revision = index.revisions.get(revision_id) if index is not None else None
        if revision is None or revision_outside_transaction(revision):
            return True
    return False


class IndexCheck:
    """INVALID indexes a run leaves (`core/index_checks.py`): read on the lock's session
    before the run and after each attempt; only for a run that may build one concurrently."""

    def __init__(self, session: Connection | None) -> None:
        self.session = session
        self.before = self._read()

    def _read(self) -> set[index_checks.InvalidIndex]:
        if self.session is None:
            return set()
        try:
            return index_checks.invalid_indexes(self.session)
        except SQLAlchemyError:
            return set()

    def left(self) -> str:
        """The sentence on indexes found INVALID now and not before ("" when none)."""
        found = self._read() - self.before
        return index_checks.sentence(found) if found else ""


def _who(seen: list[lock_waits.LockWait]) -> str:
    return f" ({'; '.join(wait.sentence() for wait in seen)})" if seen else ""


def _why_not_again(
    job: Job,
    failure: failures.RunFailure,
    heads: tuple[str, ...],
    unreadable: str | None,
    index: ScriptIndex | None,
) -> str:
    """Why the run may not be tried again ("" when it may): where it stopped must be known
    and proven by the version table, and no revision it may have been in works outside a
    transaction."""
    if unreadable:
        return (
            "Retort could not read the version table afterwards, so it cannot prove where the "
            "run stopped and does not try again."
        )
    recorded = failure.revision in heads
    if failure.revision and recorded != (job.kind == Job.Kind.DOWNGRADE):
        return (
            f"The version table does not show {failure.revision} as rolled back, so Retort "
            "does not try again."
        )
    suspects = [failure.revision] if failure.revision else list(job.revisions)
    for revision_id in suspects:
        revision = index.revisions.get(revision_id) if index is not None else None
        outside = revision_outside_transaction(revision) if revision is not None else True
        if outside:
            return (
                f"Revision {revision_id} works outside a transaction (autocommit_block or "
                "CONCURRENTLY), so part of it may have been committed: Retort does not try it "
                "again. Check the database before planning it again."
            )
    return ""


def _gave_up(
    job: Job,
    failure: failures.RunFailure,
    limits: RunLimits,
    attempt: int,
    seen: list[lock_waits.LockWait],
    state: str,
    refusal: str,
) -> str:
    tries = f"after {attempt} attempts" if attempt > 1 else "on the first attempt"
    where = (
        f" in revision {failure.revision} ({failure.step} of {len(job.revisions)})"
        if failure.revision
        else ""
    )
    who = (
        "; ".join(wait.sentence(live=False) for wait in seen)
        if seen
        else "Retort did not see who held the lock"
    )
    blockers = sorted({blocker.pid for wait in seen for blocker in wait.blockers})
    end = f" (`SELECT pg_terminate_backend({blockers[0]})` ends it)" if len(blockers) == 1 else ""
    return (
        f"Gave up waiting for a lock {tries} (lock_timeout {describe(limits.lock_timeout)})"
        f"{where}: {who}.{state}{' ' + refusal if refusal else ''} Next: let that session "
        f"finish or end it{end}, then plan the job again; or give the revision a longer "
        "lock_timeout."
    )


class Watch:
    """While alembic runs: who its sessions wait for, looked up on the lock's session (unused
    by the job meanwhile), written on the job for its page and said once per blocker in the
    log. `seen`: the waits found last, for the failure's sentence."""

    def __init__(self, session: Connection | None, job: Job, log: JobLog) -> None:
        self.session, self.job, self.log = session, job, log
        self.seen: list[lock_waits.LockWait] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Watch:
        if self.session is not None:
            self._thread = threading.Thread(
                target=self._watch, name=f"job-{self.job.pk}-lock-watch", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _watch(self) -> None:
        name = safe_runs.application_name(self.job)
        said: set[tuple] = set()
        shown = False
        try:
            pause = FIRST_LOOK_SECONDS
            while not self._stop.wait(pause):
                pause = LOOK_EVERY_SECONDS
                try:
                    found = lock_waits.waits(self.session, name)
                except SQLAlchemyError:
                    return  # the session is gone: the run itself will say so
                if found:
                    self.seen = found
                    key = tuple(
                        (wait.mode, wait.object, tuple(b.pid for b in wait.blockers))
                        for wait in found
                    )
                    if key not in said:
                        said.add(key)
                        self.log.add(
                            "alembic is " + "; ".join(wait.sentence() for wait in found) + "."
                        )
                if found or shown:
                    Job.objects.filter(pk=self.job.pk).update(
                        lock_wait=[wait.as_json() for wait in found] or None
                    )
                    shown = bool(found)
        finally:
            if shown:
                Job.objects.filter(pk=self.job.pk).update(lock_wait=None)
            dashboard_connection.close()
