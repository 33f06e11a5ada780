"""Rehearsals: the exact plan of an upgrade or downgrade, run on a copy of its target before
anyone approves it — "how long will this take on prod's data, what will it rewrite, and will it
even succeed?"

A rehearsal is a job of its own (kind `rehearse`, no approval: it changes no environment) that
a worker runs like any other: it takes the target's newest backup made at the plan's starting
point (or makes a fresh one), restores it into a scratch database (PostgreSQL: created and
dropped on the scratch server, `expected.scratch_database`; SQLite: a copy), runs the plan's
alembic command there with the plan's timeouts, and records the time of each revision, the
tables PostgreSQL rewrote, and the failing revision with its error line. The scratch database
is dropped whatever happens; a worker killed meanwhile leaves one named after the job, which
the reaper drops.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from sqlalchemy.exc import SQLAlchemyError

from environments import expected, roles, safe_runs
from environments.core import backups, failures, rehearsal
from environments.core import schema as core_schema
from environments.core.database_urls import server_engine, sync_url
from environments.core.runner import RunnerError
from environments.joblog import JobLog
from environments.models import Backup, Job, UrlUnavailable
from environments.transitions import Refused, job_audit, move, name_of, refuse


class RehearsalFailed(Exception):
    """The rehearsal could not run, or the plan failed on the copy: the sentence says which."""

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def scratch_name(job: Job) -> str:
    return f"retort_rehearsal_{job.pk}"


def rehearsal_request(*, job: Job, user) -> Job:
    """Queue a rehearsal of `job`'s plan (as it stands: its SHA-256 is recorded). Refused, with
    nothing left behind, when another job of the environment is queued or running."""
    if not roles.may_act_on_jobs(user, job.environment):
        refuse(
            "not_requester",
            f"{name_of(user)} may not rehearse jobs of {job.environment.name}.",
            user=user,
            job=job,
        )
    if job.kind not in (Job.Kind.UPGRADE, Job.Kind.DOWNGRADE):
        raise Refused(f"Only an upgrade or a downgrade can be rehearsed, not a {job.kind}.")
    if job.status not in (Job.Status.PLANNED, Job.Status.AWAITING_APPROVAL):
        raise Refused(
            f"Job #{job.pk} is {job.status}; only a plan that has not run can be rehearsed.",
            code="job_state",
        )
    if job.sql_status == Job.Preview.PENDING:
        raise Refused(
            "The plan's SQL is still being rendered; rehearse it once it is shown (the "
            "rehearsal is bound to the plan's SHA-256, which follows with it).",
            code="job_state",
        )
    if job.environment.schema:
        raise Refused("A schema tenant cannot be rehearsed yet: only whole databases.")
    if _dialect(job) not in ("postgresql", "sqlite"):
        raise Refused("Rehearsals run on PostgreSQL and SQLite databases.")
    with transaction.atomic():  # a rehearsal that cannot be queued is not kept
        return _queue_rehearsal(job, user)


def _queue_rehearsal(job: Job, user) -> Job:
    rehearsal_job = Job.objects.create(
        environment=job.environment,
        kind=Job.Kind.REHEARSE,
        rehearses=job,
        target=job.target,
        from_heads=job.from_heads,
        to_heads=job.to_heads,
        revisions=job.revisions,
        findings=[],
        run_limits=job.run_limits,
        scripts_sha256=job.scripts_sha256,
        sql_status=Job.Preview.NOT_NEEDED,
        take_backup=False,
        requested_by=user,
        reason=f"rehearsal of job #{job.pk}",
        rehearsal={"plan_sha256": job.plan_sha256, "of_kind": job.kind},
    )
    job_audit(rehearsal_job, "job_planned", user=user, details={"rehearses": job.pk})
    return move(
        rehearsal_job,
        Job.Status.QUEUED,
        event="job_queued",
        user=user,
        fields={"queued_at": timezone.now()},
        refusal="it cannot be queued now: another job of this environment is queued or running.",
    )


def _dialect(job: Job) -> str:
    try:
        return backups.dialect_of(job.environment.get_url())
    except UrlUnavailable:
        return ""


def source_for(job: Job) -> Backup | None:
    """The target's newest backup made at the plan's starting point (None: the worker makes a
    fresh one)."""
    heads = sorted(job.from_heads)
    for backup in job.environment.backups.filter(removed_at=None).order_by("-created_at", "-id"):
        if sorted(backup.heads or []) == heads and Path(backup.path).exists():
            return backup
    return None


def rehearse(job: Job, source: Backup, log: JobLog) -> None:
    """Run the rehearsal `job` on a copy made from `source` (the worker's part); raises
    RehearsalFailed."""
    environment = job.environment
    dialect = backups.dialect_of(environment.get_url())
    found: dict = {"backup": source.pk, "copy_of": source.created_at.isoformat()}
    log.add(
        f"Rehearsing job #{job.rehearses_id}'s plan on a copy of {environment.name} from "
        f"backup #{source.pk} ({source.created_at:%Y-%m-%d %H:%M} UTC)."
    )
    try:
        with expected.scratch_database(
            dialect, environment.get_url(), name=scratch_name(job)
        ) as scratch:
            log.add("Restoring it into a scratch database…")
            backups.restore_database(
                scratch, Path(source.path), source.kind, timeout=settings.RETORT_JOB_TIMEOUT
            )
            found |= _run(job, scratch, log)
        log.add("The scratch database is dropped.")
    except expected.ExpectedSchemaError as exc:
        raise RehearsalFailed(str(exc)) from None
    except backups.BackupError as exc:
        raise RehearsalFailed(f"The copy could not be restored: {exc}") from None
    finally:
        _store(job, found)
    if found.get("failed"):
        raise RehearsalFailed(found["failed"], exit_code=found.get("exit_code"))


def _run(job: Job, scratch: str, log: JobLog) -> dict:
    """The plan's command on the scratch database: what it took, what it locked and
    rewrote, and whether the schema it left is the one the migrations build."""
    environment = job.environment
    limits = safe_runs.job_limits(job, None)
    kind = job.rehearsal.get("of_kind", Job.Kind.UPGRADE)
    args = [kind, job.target]
    postgres = sync_url(scratch).get_backend_name() == "postgresql"
    timings = rehearsal.Timings(log.add)
    log.add(f"$ {' '.join([*environment.project.command, *args])}  (on the copy)")
    started = timezone.now()
    engine = server_engine(scratch, timeout=settings.RETORT_CONNECT_TIMEOUT, autocommit=True)
    before = _files(engine) if postgres else {}
    sampler = rehearsal.LockSampler(
        engine.connect, safe_runs.application_name(job), timings.current
    )
    try:
        with sampler if postgres else contextlib.nullcontext():
            result = environment.project.run_alembic(
                args,
                url=scratch,
                timeout=settings.RETORT_JOB_TIMEOUT,
                on_line=timings,
                extra_env=safe_runs.alembic_env(limits, job),
            )
        timings.end()
        after = _files(engine) if postgres else {}
    except RunnerError as exc:
        return {"failed": str(exc)}
    finally:
        engine.dispose()
    found: dict = {
        "revisions": timings.per_revision(),
        "seconds": round((timezone.now() - started).total_seconds(), 3),
        "rewrites": rehearsal.rewritten(before, after),
        "locks": sampler.held(),
    }
    if result.ok:
        found["schema"] = _schema_check(job, scratch)
    else:
        failure = failures.read_failure(result.output, list(job.revisions))
        where = f" in revision {failure.revision}" if failure.revision else ""
        cause = failure.cause or f"alembic exited with code {result.exit_code}"
        found |= {
            "failed": f"The plan failed on the copy{where}: {cause}",
            "failed_revision": failure.revision,
            "error_line": cause,
            "exit_code": result.exit_code,
        }
    return found


def _schema_check(job: Job, scratch: str) -> list[str] | str:
    """The copy's schema after the plan against the one its migrations build for the plan's
    end (`expected.py`): the differences in words, or why it could not be compared."""
    try:
        live = core_schema.read_schema(scratch, timeout=settings.RETORT_CONNECT_TIMEOUT)
        built = expected.build(
            environment=job.environment, heads=list(job.to_heads), dialect=live.dialect
        )
    except (core_schema.SchemaReadError, expected.ExpectedSchemaError) as exc:
        return f"The schema could not be compared: {exc}"
    if built.error:
        return f"The schema the migrations build could not be built: {built.error}"
    copy = "the copy"
    differences = core_schema.compare_schemas(
        expected.schema_from_json(built.schema_json),
        live,
        left_name="its migrations",
        right_name=copy,
        phrasing=lambda has, thing: (
            f"{copy} has {thing} that no migration creates"
            if has == copy
            else f"{copy} lacks {thing} that its migrations create"
        ),
    )
    return [difference.detail for difference in differences]


def _files(engine) -> dict[str, int]:
    """The copy's tables' storage files (empty when they cannot be read)."""
    try:
        with engine.connect() as connection:
            return rehearsal.storage_files(connection)
    except SQLAlchemyError:
        return {}


def _store(job: Job, found: dict) -> None:
    measured = job.rehearsal | found | {"at": timezone.now().isoformat()}
    Job.objects.filter(pk=job.pk).update(rehearsal=measured)
    job.rehearsal = measured


def latest_for(job: Job) -> Job | None:
    """The newest finished rehearsal of `job`'s plan as it stands (its SHA-256)."""
    sha = job.plan_sha256
    for candidate in job.rehearsals.filter(status__in=Job.FINISHED).order_by("-finished_at"):
        if candidate.rehearsal.get("plan_sha256") == sha:
            return candidate
    return None


def rehearsal_refusal(job: Job) -> str:
    """Why the environment's policy does not count an approval of (or run, without approvals)
    this plan yet: no successful rehearsal of it within `rehearsal_required_hours`; "" when
    the policy asks for none, or it had one."""
    hours = job.environment.rehearsal_required_hours
    if not hours or job.kind not in (Job.Kind.UPGRADE, Job.Kind.DOWNGRADE):
        return ""
    since = timezone.now() - timedelta(hours=hours)
    newest = latest_for(job)
    if newest is not None and newest.status == Job.Status.SUCCEEDED and newest.finished_at >= since:
        return ""
    if newest is None:
        found = "it has none"
    elif newest.status != Job.Status.SUCCEEDED:
        found = f"its newest, #{newest.pk}, {newest.status}"
    else:
        found = f"its newest, #{newest.pk}, ended {newest.finished_at:%Y-%m-%d %H:%M} UTC"
    return (
        f"{job.environment.name}'s policy counts an approval only after a successful rehearsal "
        f"of this exact plan within the last {hours} h, and {found}. Rehearse it on a copy "
        "first."
    )


def summary(rehearsal_job: Job) -> str:
    """ "Rehearsed 2 h ago on a copy of prod from 06:00: 4 min 12 s; revision abc rewrote …"."""
    data = rehearsal_job.rehearsal
    copy_of = datetime.fromisoformat(data["copy_of"]) if data.get("copy_of") else None
    when = f" from {copy_of:%Y-%m-%d %H:%M} UTC" if copy_of else ""
    environment = rehearsal_job.environment.name
    failed = data.get("failed") or (
        rehearsal_job.error if rehearsal_job.status != Job.Status.SUCCEEDED else ""
    )
    if not failed:
        took = f"{data.get('seconds', 0):.1f} s"
        parts = [_rewrite(table, data.get("locks") or []) for table in data.get("rewrites") or []]
        parts = parts or ["no table was rewritten"]
        schema = data.get("schema")
        if isinstance(schema, list):
            parts.append(
                f"the schema differs from what the migrations build: {'; '.join(schema)}"
                if schema
                else "its schema is the one the migrations build"
            )
        elif schema:
            parts.append(schema)
        return f"Rehearsed on a copy of {environment}{when}: {took}; {'; '.join(parts)}."
    return f"The rehearsal on a copy of {environment}{when} failed: {failed}"


_STRENGTH = (  # PostgreSQL's table lock modes, weakest first
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)


def _rewrite(table: str, locks: list[dict]) -> str:
    """ "revision r2 rewrote orders (3.9 s, AccessExclusiveLock)", from the sampled locks."""
    held = [lock for lock in locks if lock["relation"] == table]
    if not held:
        return f"{table} was rewritten"
    longest = max(held, key=lambda lock: (_STRENGTH.index(lock["mode"]), lock["seconds"]))
    return (
        f"revision {longest['revision']} rewrote {table} ({longest['seconds']} s, "
        f"{longest['mode']})"
    )


def scratch_leftover_drop(job: Job) -> None:
    """Drop the scratch database a killed rehearsal left (the reaper's part)."""
    with contextlib.suppress(Exception):
        url = job.environment.get_url()
        if backups.dialect_of(url) == "postgresql":
            expected.scratch_leftover_drop(url, scratch_name(job))
