"""Execution: a worker runs a queued job, at most once.

It takes the job (queued → running), re-checks the approvals and the revision files, locks
the target, re-reads its version table and refuses if the database moved since the plan,
backs up, runs alembic (or restores a backup) in a subprocess that dies with the worker, reads
the version table again, and records the result (running → succeeded or failed). The reaper
marks jobs whose worker stopped beating as interrupted. Status changes go through
`transitions.py`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from environments import lock_retries, proofs, rehearsals, safe_runs
from environments.core import backups
from environments.core.database_urls import redact, server_engine
from environments.core.scripts import ScriptIndex
from environments.core.versions import VersionRead, classify, read_versions, read_versions_on
from environments.joblog import JobLog, heartbeat
from environments.models import Backup, Environment, Job, UrlUnavailable
from environments.planning import scripts_digest
from environments.reads import environment_read, environment_read_store
from environments.rollout_coordinator import rollout_advance_now
from environments.rollout_plans import rollout_refusal
from environments.transitions import Refused, move


class _Failed(Exception):
    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def _target_lock(url: str, key: int, log: JobLog) -> Iterator[Connection | None]:
    """A PostgreSQL advisory lock on the target's version table (`key`, see
    `migration_lock.migration_lock_key`) for the whole run: another Retort (or anyone taking
    the same lock) cannot migrate it at the same time; tenants in other schemas of the database can.
    Held by a session of its own, so it is released when the run ends or the worker dies; the
    version table is read on that session (autocommit: each read sees what alembic committed).
    SQLite relies on the one-active-job constraint (and yields no session)."""
    if backups.dialect_of(url) != "postgresql":
        yield None
        return
    engine = server_engine(url, timeout=settings.RETORT_CONNECT_TIMEOUT, autocommit=True)
    try:
        try:
            conn = engine.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            name = f"retort job #{log.job.pk} (migration lock)"  # as the cards name it
            conn.execute(text("SELECT set_config('application_name', :n, false)"), {"n": name})
            # the reads on this session give up as a version read does (a version table
            # someone holds locked must not keep a job running with nobody watching)
            limit = int(settings.RETORT_CONNECT_TIMEOUT * 1000)
            conn.execute(text(f"SET statement_timeout = {limit}"))
        except Exception as exc:  # noqa: BLE001 - any driver error becomes a sentence
            raise _Failed(f"Could not lock the target database: {redact(str(exc), url)}") from None
        try:
            if not got:
                raise _Failed(
                    "Another process holds Retort's migration lock on this database; "
                    "nothing was changed."
                )
            log.add("Holding the migration lock on the target database.")
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.close()
    finally:
        engine.dispose()


def _read_version(
    environment: Environment, url: str, session: Connection | None = None
) -> VersionRead:
    """The version table as it is now (heads None: there is none), on the lock's session when
    there is one. Raises _Failed when it cannot be read."""
    table = environment.project.version_table or "alembic_version"
    schema = environment.version_table_schema
    if session is None:
        state = read_versions(
            url,
            version_table=table,
            version_table_schema=schema,
            timeout=settings.RETORT_CONNECT_TIMEOUT,
        )
    else:
        try:
            state = read_versions_on(session, version_table=table, version_table_schema=schema)
        except DBAPIError as exc:
            kind, message = classify(exc.orig if exc.orig is not None else exc)
            state = VersionRead(failure=kind, message=redact(message, url))
        except SQLAlchemyError as exc:  # the session itself was lost
            kind, message = classify(exc)
            state = VersionRead(failure=kind, message=redact(message, url))
    if state.failure is not None:
        raise _Failed(f"The database could not be read: {state.message}")
    return state


def _read_heads(
    environment: Environment, url: str, session: Connection | None = None
) -> tuple[str, ...]:
    return tuple(sorted(_read_version(environment, url, session).heads or ()))


def _backup_folder(environment: Environment) -> Path:
    return Path(settings.RETORT_BACKUP_ROOT) / environment.project.slug / environment.slug


def _make_backup(job: Job, url: str, log: JobLog, heads: tuple[str, ...]) -> Backup:
    environment = job.environment
    folder = _backup_folder(environment)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{timezone.now():%Y%m%dT%H%M%S}-job{job.pk}"
    log.add(
        f"No backup of {environment.name} at the plan's starting point: backing it up to "
        "rehearse on a copy…"
        if job.kind == Job.Kind.REHEARSE
        else f"Backing up {environment.name} before the {job.kind}…"
    )
    try:
        result = backups.backup_database(
            url,
            folder,
            name=name,
            timeout=settings.RETORT_JOB_TIMEOUT,
            on_line=log.add,
            schema=environment.schema or None,
        )
    except backups.BackupError as exc:
        raise _Failed(f"The backup failed, so the database was not touched: {exc}") from None
    backup = Backup.objects.create(
        environment=environment,
        made_by_job=job,
        kind=result.kind,
        path=str(result.path),
        size=result.size,
        sha256=result.sha256,
        verified=result.verified,
        heads=list(heads),
    )
    Job.objects.filter(pk=job.pk).update(backup=backup)
    job.backup = backup
    log.add(
        f"Backup #{backup.pk}: {result.path.name}, {result.size:,} bytes, "
        f"sha256 {result.sha256[:12]}…; {result.verified}."
    )
    return backup


def _heads_or_why(
    environment: Environment, url: str, session: Connection | None
) -> tuple[tuple[str, ...], str | None]:
    """The version table after a failed attempt: (heads, None), or ((), why it is unknown)."""
    try:
        return _read_heads(environment, url, session), None
    except _Failed as exc:
        return (), str(exc)


@dataclass(frozen=True)
class Seen:
    """The version table as the run read it last, under its lock."""

    read: VersionRead
    at: datetime
    duration_ms: int

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(sorted(self.read.heads or ()))


def _execute(job: Job, log: JobLog) -> Seen | None:
    """The run itself; returns what the version table holds afterwards (None: a rehearsal,
    which leaves the target as it was), or raises _Failed."""
    environment = job.environment
    try:
        url = environment.get_url()
    except UrlUnavailable as exc:
        raise _Failed(str(exc)) from None
    log.add(
        f"Job #{job.pk}: {job.kind} {environment.project.name}/{environment.name} to "
        f"{job.target}; planned from {', '.join(job.from_heads) or 'an empty version table'}"
        f" ({len(job.revisions)} revision{'s' if len(job.revisions) != 1 else ''})."
    )
    index = _check_still_approved(job, log)
    if job.kind == Job.Kind.REHEARSE:  # on a copy: the target is only read (and backed up)
        heads = _read_heads(environment, url)
        if list(heads) != sorted(job.from_heads):
            raise _Failed(_moved(heads, job))
        source = rehearsals.source_for(job) or _make_backup(job, url, log, heads)
        rehearsals.rehearse(job, source, log)
        return None
    try:
        limits = safe_runs.job_limits(job, index)
    except safe_runs.LimitsUnreadable as exc:
        raise _Failed(f"{exc} Nothing was changed.") from None
    with _target_lock(url, environment.lock_key, log) as session:
        heads = _read_heads(environment, url, session)
        if list(heads) != sorted(job.from_heads):
            raise _Failed(_moved(heads, job))
        log.add(f"The database holds {', '.join(heads) or 'nothing'}, as planned.")
        if job.backs_up:
            _make_backup(job, url, log, heads)
        if job.kind == Job.Kind.RESTORE:
            _restore(job, url, log)
        else:
            args = (
                ["stamp", "--purge", job.target]
                if job.kind == Job.Kind.STAMP
                else [job.kind, job.target]
            )
            lock_retries.run_alembic(  # watched; tried again on a lock timeout
                job,
                url,
                log,
                args,
                limits,
                index=index,
                session=session,
                heads_now=lambda: _heads_or_why(environment, url, session),
            )
        read_at = timezone.now()
        found = _read_version(environment, url, session)
        seen = Seen(found, read_at, int((timezone.now() - read_at).total_seconds() * 1000))
    after = seen.heads
    if list(after) != sorted(job.to_heads):
        raise _Failed(
            f"After the run the database holds {', '.join(after) or 'nothing'}, not "
            f"{', '.join(sorted(job.to_heads)) or 'nothing'} as planned."
        )
    return seen


def _moved(heads: tuple[str, ...], job: Job) -> str:
    return (
        f"The database moved since this plan: it holds {', '.join(heads) or 'nothing'}, the "
        f"plan was made when it held {', '.join(sorted(job.from_heads)) or 'nothing'}. Nothing "
        "was changed; plan the job again."
    )


def _check_still_approved(job: Job, log: JobLog) -> ScriptIndex | None:
    """The last gate, whatever put the job in the queue: the approvals the policy asks for,
    given for this very plan (a rollout's target: for its rollout's plans), and revision files
    unchanged since it was made. Returns the scripts it read (None when the job runs none)."""
    index, error = job.environment.project.load_scripts() if job.revisions else (None, None)
    if job.rollout_id is not None:
        refusal = rollout_refusal(job, index)
        if refusal:
            raise _Failed(refusal)
        log.add(f"A target of rollout #{job.rollout_id}, whose plans were approved.")
    missing = 0 if job.rollout_id is not None else job.approvals_missing()
    if missing:
        required = job.required_approvals
        raise _Failed(
            f"{job.environment.name} needs {required} approval{'s' if required != 1 else ''} "
            f"of this exact plan and {missing} {'is' if missing == 1 else 'are'} missing; "
            "nothing was changed."
        )
    refusal = safe_runs.review_refusal(job)
    if refusal:
        raise _Failed(f"{refusal} Nothing was changed.")
    if job.revisions:
        if index is None:
            raise _Failed(f"The scripts cannot be read: {error}")
        if scripts_digest(index, job.revisions) != job.scripts_sha256:
            raise _Failed(
                "The revision files changed since this job was planned (and approved); "
                "nothing was changed. Plan it again."
            )
    if job.required_approvals and job.rollout_id is None:
        count = job.approvals_counted().count()
        log.add(f"Approved by {count} of the {job.required_approvals} required.")
    return index


def _restore(job: Job, url: str, log: JobLog) -> None:
    backup = job.restore_from
    assert backup is not None
    path = Path(backup.path)
    log.add(f"Restoring backup #{backup.pk} ({path.name})…")
    try:
        log.add(backups.verify_backup(path, backup.kind, expected_sha256=backup.sha256))
        backups.restore_database(
            url,
            path,
            backup.kind,
            timeout=settings.RETORT_JOB_TIMEOUT,
            on_line=log.add,
            schema=job.environment.schema or None,
        )
    except backups.BackupError as exc:
        raise _Failed(f"The restore failed: {exc}") from None
    log.add("Restored.")


def job_run(*, job_id: int) -> Job | None:
    """Run a queued job (the Celery task). At most once: a second delivery finds it taken."""
    job = Job.objects.select_related("environment__project", "restore_from").filter(pk=job_id)
    job = job.first()
    if job is None:
        return None
    now = timezone.now()
    host, pid = socket.gethostname()[:200], os.getpid()
    try:
        move(
            job,
            Job.Status.RUNNING,
            event="job_started",
            system_actor="worker",
            details={"worker": f"{host}:{pid}"},
            fields={"started_at": now, "heartbeat_at": now, "worker_host": host, "worker_pid": pid},
        )
    except Refused:
        return None  # taken by another delivery, or cancelled meanwhile
    log = JobLog(job)
    status, error, exit_code, heads, seen = Job.Status.SUCCEEDED, "", 0, None, None
    with heartbeat(job, log):
        try:
            seen = _execute(job, log)
            if seen is not None:
                heads = seen.heads
                log.add(f"Done: the database holds {', '.join(heads) or 'nothing'}.")
            else:
                log.add(f"Done: {rehearsals.summary(job)}")
        except (_Failed, lock_retries.RunFailed, rehearsals.RehearsalFailed) as exc:
            status, error, exit_code = Job.Status.FAILED, str(exc), exc.exit_code
            log.add(f"FAILED: {exc}")
        except Exception as exc:  # noqa: BLE001 - a job must never stay "running"
            status, error, exit_code = Job.Status.FAILED, f"Retort error: {exc}", None
            log.add(f"FAILED: Retort error: {exc}")
    if job.kind != Job.Kind.REHEARSE:
        _read_after(job, log, seen)
    return _finish(job, status=status, error=error, exit_code=exit_code, heads=heads)


def _read_after(job: Job, log: JobLog, seen: Seen | None) -> None:
    """Store the environment's state before the job ends, so the overview shows the new state
    and the change it finds is recorded as this job's (it is still `running`): what the run
    read last under its lock, or, after a failure, a read of its own."""
    close_old_connections()
    try:
        if seen is not None:
            environment_read_store(
                environment=job.environment,
                read=seen.read,
                checked_at=seen.at,
                duration_ms=seen.duration_ms,
            )
        else:
            environment_read(environment=job.environment)
    except Exception as exc:  # noqa: BLE001 - a failed read must not keep the job running
        log.add(f"The state could not be re-read afterwards: {exc}")
        log.flush()


def _finish(job: Job, *, status, error: str, exit_code, heads) -> Job:
    try:
        move(
            job,
            status,
            event=f"job_{status}",
            system_actor="worker",
            details={"error": error},
            notice="job_finished",
            fields={
                "error": error,
                "exit_code": exit_code,
                "finished_at": timezone.now(),
                "result_heads": list(heads) if heads is not None else None,
            },
        )
    except Refused:
        return job  # the reaper declared it interrupted meanwhile; its word stands
    if job.backup_id:
        backups_prune(environment=job.environment)
    if job.rollout_id is not None:
        rollout_advance_now(job.rollout_id)
    proofs.proof_send(job)
    return job


def backups_prune(*, environment: Environment) -> int:
    """Keep the newest `keep_backups` backups of an environment; remove the older files."""
    keep = max(environment.keep_backups, 1)
    stale = environment.backups.filter(removed_at=None).order_by("-created_at", "-id")[keep:]
    removed = 0
    for backup in stale:
        if Job.objects.filter(restore_from=backup, status__in=Job.ACTIVE).exists():
            continue
        with contextlib.suppress(FileNotFoundError):
            Path(backup.path).unlink()
        Backup.objects.filter(pk=backup.pk).update(removed_at=timezone.now())
        removed += 1
    return removed


def jobs_reap(*, now=None) -> list[int]:
    """Running jobs whose worker stopped beating become `interrupted`, freeing the environment;
    a backup their worker left half-written is removed (its tools died with the worker)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.RETORT_HEARTBEAT_TIMEOUT)
    reaped = []
    for job in Job.objects.select_related("environment__project").filter(
        status=Job.Status.RUNNING, heartbeat_at__lt=cutoff
    ):
        message = (
            f"The worker {job.worker_host}:{job.worker_pid} stopped (no heartbeat since "
            f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC). Check the database's state and "
            "its backup before the next job."
        )
        with contextlib.suppress(Refused):  # it finished meanwhile
            move(
                job,
                Job.Status.INTERRUPTED,
                event="job_interrupted",
                system_actor="reaper",
                details={"error": message},
                notice="job_finished",
                fields={"finished_at": now, "error": message},
            )
            reaped.append(job.pk)
            backups.remove_partials(_backup_folder(job.environment), f"*-job{job.pk}.*")
            if job.kind == Job.Kind.REHEARSE:
                rehearsals.scratch_leftover_drop(job)
            if job.rollout_id is not None:
                rollout_advance_now(job.rollout_id)
    return reaped
