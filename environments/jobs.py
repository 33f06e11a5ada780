"""Jobs: every change to a database is planned here, queued, and run by a Celery worker.

The web process plans (statically, from the scripts: nothing is imported or run) and queues;
the worker previews the SQL, backs up, locks, re-checks, runs alembic in a subprocess, checks
the result and records it. Every transition is an audit event in the same transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from environments import dispatch, notify, risks, roles
from environments.audit import audit_record
from environments.core import backups, failures, plan
from environments.core.runner import RunnerError
from environments.core.versions import read_versions, redact, sync_url
from environments.models import Backup, Environment, Job, JobLogLine, UrlUnavailable
from environments.services import environment_read

_LOCK_KEY = 0x7265746F72746A62  # pg_advisory_lock key on the target: "retortjb"


class JobRefused(Exception):
    """The request cannot become a job (or move on); the message says why, in words."""


class Refused(JobRefused):
    """A refusal with a code (`refusal_status` maps it to HTTP); the policy's are also audit
    events, recorded by `refuse`."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


_WHO_MAY_NOT = {"not_requester", "not_approver", "self_approval", "wrong_target"}


def refusal_status(exc: JobRefused) -> int:
    """The HTTP status for a refusal: 403 when the person may not, 409 when the job's state
    or the policy stands in the way, 400 when the request itself makes no sense."""
    code = getattr(exc, "code", "")
    if code in _WHO_MAY_NOT:
        return 403
    return 409 if code else 400


# --- planning and queueing (web process) ---------------------------------------------------


def _current_heads(environment: Environment, snapshot=None) -> tuple[str, ...]:
    """What the environment holds: `snapshot` when the caller has just read it, else a read."""
    snapshot = snapshot if snapshot is not None else environment_read(environment=environment)
    if snapshot.is_read_failure:
        raise JobRefused(
            f"{environment.name} cannot be read, so no job can be planned: {snapshot.error}"
        )
    return tuple(sorted(snapshot.heads))


def scripts_digest(index, revisions: list[str]) -> str:
    """SHA-256 over the planned revision files' contents, in plan order: an edited file (the
    same revision ids, other SQL) makes the plan, and the approvals bound to it, stale."""
    digest = hashlib.sha256()
    for revision_id in revisions:
        revision = index.revisions.get(revision_id)
        try:
            if revision is None:
                content = hashlib.sha256(b"(missing)").digest()
            else:
                with revision.path.open("rb") as file:  # streamed: a file may be large
                    content = hashlib.file_digest(file, "sha256").digest()
        except OSError:
            content = hashlib.sha256(b"(unreadable)").digest()
        digest.update(revision_id.encode() + b"\0" + content)
    return digest.hexdigest() if revisions else ""


def _plan_fields(
    environment: Environment, kind: str, target: str, restore_from: Backup | None, snapshot=None
) -> dict:
    """Everything a plan holds, from where the database stands now and the scripts as they
    are; raises JobRefused with the reason when there is nothing sensible to plan."""
    from_heads = _current_heads(environment, snapshot)
    index, error = environment.project.load_scripts()
    if kind == Job.Kind.RESTORE:
        if restore_from is None or restore_from.environment_id != environment.pk:
            raise JobRefused("Choose one of this environment's backups to restore.")
        if not restore_from.available:
            raise JobRefused(f"Backup #{restore_from.pk} is no longer on disk.")
        to_heads, revisions, found, digest = sorted(restore_from.heads), [], [], ""
        target = f"backup #{restore_from.pk}"
    else:
        if kind not in Job.Kind.values:
            raise JobRefused(f"{kind!r} is not a kind of job: upgrade, downgrade, stamp, restore.")
        if index is None:
            raise JobRefused(f"The scripts cannot be read: {error}")
        try:
            planned = plan.plan_job(index, kind, target, from_heads)
        except plan.PlanError as exc:
            raise JobRefused(str(exc)) from None
        if planned.changes_nothing:
            raise JobRefused(
                f"{environment.name} already holds {', '.join(from_heads) or 'nothing'}; "
                f"{kind} to {target!r} would change nothing."
            )
        to_heads, revisions = list(planned.to_heads), list(planned.revisions)
        found = risks.plan_risks(environment, index, revisions, kind)
        digest = scripts_digest(index, revisions)
    return {
        "target": target,
        "from_heads": list(from_heads),
        "to_heads": list(to_heads),
        "revisions": revisions,
        "findings": found,
        "scripts_sha256": digest,
    }


def job_request(
    *,
    environment: Environment,
    kind: str,
    target: str = "",
    user,
    reason: str = "",
    restore_from: Backup | None = None,
    take_backup: bool | None = None,
) -> Job:
    """Plan a job from where the database stands now; the SQL preview follows on a worker.
    `take_backup` defaults to the environment's `backup_before_jobs`; a policy that makes
    backups mandatory refuses False."""
    if take_backup is None:
        take_backup = environment.backup_before_jobs
    if not roles.may_request(user, environment.project):
        refuse(
            "not_requester",
            f"{_name(user)} may read {environment.name} but not change it: planning a job "
            f"needs the developer or release manager role in {environment.project.name}.",
            user=user,
            environment=environment,
        )
    if not take_backup and environment.backup_required:
        refuse(
            "backup_required",
            f"{environment.name}'s policy makes a backup mandatory before every upgrade and "
            "downgrade; it cannot be skipped.",
            user=user,
            environment=environment,
        )
    fields = _plan_fields(environment, kind, target, restore_from)
    with transaction.atomic():
        job = Job.objects.create(
            environment=environment,
            kind=kind,
            restore_from=restore_from,
            requested_by=user,
            reason=reason,
            take_backup=take_backup or environment.backup_required,
            sql_status=Job.Preview.NOT_NEEDED if kind == Job.Kind.RESTORE else Job.Preview.PENDING,
            **fields,
        )
        job_audit(job, "job_planned", user=user, details={"revisions": len(job.revisions)})
        if job.sql_status == Job.Preview.PENDING:
            dispatch.job_preview_on_commit(job)
    return job


def job_replan(*, job: Job, user) -> tuple[Job, bool]:
    """Plan a waiting job again from where the database and the scripts stand now.

    Returns the job and whether its plan changed; when it did, the approvals given for the
    earlier plan stop counting (they are bound to its SHA-256) and the SQL is rendered anew.
    """
    if not (
        roles.may_request(user, job.environment.project) or roles.may_approve(user, job.environment)
    ):
        refuse(
            "not_requester",
            f"{_name(user)} may not plan jobs for {job.environment.name}.",
            user=user,
            job=job,
        )
    if job.status not in (Job.Status.PLANNED, Job.Status.AWAITING_APPROVAL):
        raise Refused(
            f"Job #{job.pk} is {job.status}; only a waiting job can be re-planned.",
            code="job_state",
        )
    target = job.target if job.kind != Job.Kind.RESTORE else ""
    fields = _plan_fields(job.environment, job.kind, target, job.restore_from)
    with transaction.atomic():
        locked = Job.objects.select_for_update(of=("self",)).get(pk=job.pk)
        if locked.status not in (Job.Status.PLANNED, Job.Status.AWAITING_APPROVAL):
            raise Refused(
                f"Job #{job.pk} is {locked.status}; it can no longer be re-planned.",
                code="job_state",
            )
        before = locked.plan_sha256
        same = all(getattr(locked, key) == value for key, value in fields.items())
        if same and locked.sql_status != Job.Preview.PENDING:
            return locked, False
        for key, value in fields.items():
            setattr(locked, key, value)
        if locked.kind != Job.Kind.RESTORE:
            locked.sql_status, locked.sql_preview, locked.sql_sha256 = Job.Preview.PENDING, "", ""
            locked.sql_note = ""
        locked.replanned_at = timezone.now()
        locked.save()
        stale = locked.approvals.filter(plan_sha256=before).count()
        job_audit(
            locked,
            "job_replanned",
            user=user,
            details={"plan_before": before, "revisions": len(locked.revisions), "stale": stale},
        )
        if locked.sql_status == Job.Preview.PENDING:
            dispatch.job_preview_on_commit(locked)
    return locked, True


def plan_outdated(job: Job, snapshot=None) -> list[str]:
    """Why a waiting job's plan no longer matches the database or the scripts (reads the
    database live, unless `snapshot` is a read just made); empty when it still does."""
    environment = job.environment
    try:
        target = job.target if job.kind != Job.Kind.RESTORE else ""
        fields = _plan_fields(environment, job.kind, target, job.restore_from, snapshot)
    except JobRefused as exc:
        return [str(exc)]
    reasons = []
    if sorted(fields["from_heads"]) != sorted(job.from_heads):
        reasons.append(
            f"{environment.name} now holds {', '.join(fields['from_heads']) or 'nothing'}; the "
            f"plan was made when it held {', '.join(job.from_heads) or 'nothing'}."
        )
    elif fields["revisions"] != job.revisions or fields["to_heads"] != job.to_heads:
        reasons.append("The scripts changed: the same target now means other revisions.")
    elif fields["scripts_sha256"] != job.scripts_sha256:
        reasons.append("The revision files changed since the plan was made.")
    return reasons


def queue_now(job: Job, *, user, from_status: str) -> Job:
    """Move a job from `from_status` to `queued` and send it to a worker. Only the approvals
    service calls this, after its checks; refused while the environment has an active job."""
    try:
        with transaction.atomic():
            won = Job.objects.filter(pk=job.pk, status=from_status).update(
                status=Job.Status.QUEUED, queued_at=timezone.now()
            )
            if not won:
                job.refresh_from_db()
                raise Refused(
                    f"Job #{job.pk} is {job.status}; it cannot be queued now.", code="job_state"
                )
            job.status = Job.Status.QUEUED
            job_audit(job, "job_queued", user=user)
            dispatch.job_run_on_commit(job)
    except IntegrityError:
        active = Job.objects.filter(environment=job.environment_id, status__in=Job.ACTIVE).first()
        which = f" (job #{active.pk}, {active.status})" if active else ""
        job.refresh_from_db()
        raise Refused(
            f"{job.environment.name} already has a job queued or running{which}; one at a time.",
            code="environment_busy",
        ) from None
    job.refresh_from_db()
    return job


def job_cancel(*, job: Job, user) -> Job:
    if not (
        roles.may_request(user, job.environment.project) or roles.may_approve(user, job.environment)
    ):
        refuse(
            "not_requester",
            f"{_name(user)} may not cancel jobs for {job.environment.name}.",
            user=user,
            job=job,
        )
    with transaction.atomic():
        won = Job.objects.filter(pk=job.pk, status__in=Job.WAITING).update(
            status=Job.Status.CANCELLED, finished_at=timezone.now()
        )
        if not won:
            job.refresh_from_db()
            raise Refused(
                f"Job #{job.pk} is {job.status}; only a waiting job can be cancelled.",
                code="job_state",
            )
        job.status = Job.Status.CANCELLED
        job_audit(job, "job_cancelled", user=user)
    job.refresh_from_db()
    return job


def _name(user) -> str:
    return getattr(user, "username", "") or "An anonymous user"


def refuse(
    code: str,
    message: str,
    *,
    user,
    job: Job | None = None,
    environment: Environment | None = None,
    action: str = "job_refused",
    details: dict | None = None,
):
    """Record the refusal (in a transaction of its own: it must outlive the caller's, which
    rolls back) and raise it. Call it outside any transaction that is about to fail."""
    environment = job.environment if job is not None else environment
    with transaction.atomic():
        audit_record(
            action=action,
            user=user if getattr(user, "is_authenticated", False) else None,
            environment=environment,
            job_id=job.pk if job is not None else None,
            from_revisions=job.from_heads if job is not None else None,
            to_revisions=job.to_heads if job is not None else None,
            details={"reason": code, "message": message} | (details or {}),
        )
    raise Refused(message, code=code)


def job_audit(job: Job, action: str, *, user=None, system_actor=None, details=None) -> None:
    audit_record(
        action=action,
        user=user,
        system_actor=system_actor,
        environment=job.environment,
        job_id=job.pk,
        from_revisions=job.from_heads,
        to_revisions=job.to_heads,
        details={"kind": job.kind, "target": job.target, "status": job.status} | (details or {}),
    )


# --- the worker side -----------------------------------------------------------------------


class JobLog:
    """Appends lines to a job's log; flushed in batches and by the heartbeat every second."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._lock = threading.Lock()
        self._pending: list[JobLogLine] = []
        self._steps = 0
        self._seq = JobLogLine.objects.filter(job=job).count()

    def add(self, line: str) -> None:
        with self._lock:
            self._seq += 1
            self._pending.append(JobLogLine(job_id=self.job.pk, seq=self._seq, text=line))
            if plan.step_of(line) is not None:
                self._steps += 1
            full = len(self._pending) >= 50
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            steps, self._steps = self._steps, 0
        if pending:
            JobLogLine.objects.bulk_create(pending)
        if steps:
            Job.objects.filter(pk=self.job.pk).update(progress_done=F("progress_done") + steps)


@contextlib.contextmanager
def _heartbeat(job: Job, log: JobLog) -> Iterator[None]:
    """Beat (and flush the log) from a thread of its own while the job runs."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(min(1.0, settings.RETORT_HEARTBEAT_SECONDS)):
                log.flush()
                Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"job-{job.pk}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        log.flush()


class _Failed(Exception):
    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def _target_lock(url: str, log: JobLog) -> Iterator[None]:
    """A PostgreSQL advisory lock on the target for the whole run: another Retort (or anyone
    taking the same lock) cannot migrate it at the same time. Held by a session of its own, so
    it is released when the run ends or the worker dies. SQLite relies on the one-active-job
    constraint."""
    if backups.dialect_of(url) != "postgresql":
        yield
        return
    engine = create_engine(
        sync_url(url),
        poolclass=NullPool,
        connect_args={"connect_timeout": max(2, int(settings.RETORT_CONNECT_TIMEOUT))},
        isolation_level="AUTOCOMMIT",
    )
    try:
        try:
            conn = engine.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY}).scalar()
        except Exception as exc:  # noqa: BLE001 - any driver error becomes a sentence
            raise _Failed(f"Could not lock the target database: {redact(str(exc), url)}") from None
        try:
            if not got:
                raise _Failed(
                    "Another process holds Retort's migration lock on this database; "
                    "nothing was changed."
                )
            log.add("Holding the migration lock on the target database.")
            yield
        finally:
            with contextlib.suppress(Exception):
                conn.close()
    finally:
        engine.dispose()


def _read_heads(environment: Environment, url: str) -> tuple[str, ...]:
    project = environment.project
    state = read_versions(
        url,
        version_table=project.version_table or "alembic_version",
        version_table_schema=project.version_table_schema or None,
        timeout=settings.RETORT_CONNECT_TIMEOUT,
    )
    if state.failure is not None:
        raise _Failed(f"The database could not be read: {state.message}")
    return tuple(sorted(state.heads or ()))


def _make_backup(job: Job, url: str, log: JobLog, heads: tuple[str, ...]) -> Backup:
    environment = job.environment
    folder = Path(settings.RETORT_BACKUP_ROOT) / environment.project.slug / environment.slug
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{timezone.now():%Y%m%dT%H%M%S}-job{job.pk}"
    log.add(f"Backing up {environment.name} before the {job.kind}…")
    try:
        result = backups.backup_database(
            url, folder, name=name, timeout=settings.RETORT_JOB_TIMEOUT, on_line=log.add
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


def _notice_dead_clients() -> dict[str, str]:
    """Ask PostgreSQL (libpq clients: psycopg2, psycopg) to check every 2 s that alembic is
    still there. A backend otherwise runs a long statement to its end after its client (and
    worker) died, holding its locks and transaction open that long."""
    options = os.environ.get("PGOPTIONS", "")
    return {"PGOPTIONS": f"{options} -c client_connection_check_interval=2000".strip()}


def _run_alembic(job: Job, url: str, log: JobLog, args: list[str]) -> None:
    project = job.environment.project
    log.add(f"$ {' '.join(project.command + args)}")
    try:
        result = project.run_alembic(
            args,
            url=url,
            timeout=settings.RETORT_JOB_TIMEOUT,
            on_line=log.add,
            extra_env=_notice_dead_clients(),
        )
    except RunnerError as exc:
        raise _Failed(str(exc)) from None
    if not result.ok:
        failure = failures.read_failure(result.output, list(job.revisions))
        raise _Failed(
            _failure_sentence(job, url, failure, result.exit_code), exit_code=result.exit_code
        )


def _failure_sentence(job: Job, url: str, failure, exit_code: int) -> str:
    """The failure with the state the database is in now (its version table read again)."""
    try:
        heads, unreadable = _read_heads(job.environment, url), None
    except _Failed as exc:
        heads, unreadable = (), str(exc)
    return failures.describe(
        failure,
        exit_code=exit_code,
        planned=len(job.revisions),
        heads=heads,
        unreadable=unreadable,
        rolls_back=sync_url(url).get_backend_name() == "postgresql",
        backup_id=job.backup_id,
    )


def _execute(job: Job, log: JobLog) -> tuple[str, ...]:
    """The run itself; returns the heads the database holds afterwards, or raises _Failed."""
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
    _check_still_approved(job, log)
    with _target_lock(url, log):
        heads = _read_heads(environment, url)
        if list(heads) != sorted(job.from_heads):
            raise _Failed(
                "The database moved since this plan: it holds "
                f"{', '.join(heads) or 'nothing'}, the plan was made when it held "
                f"{', '.join(sorted(job.from_heads)) or 'nothing'}. Nothing was changed; "
                "plan the job again."
            )
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
            _run_alembic(job, url, log, args)
        after = _read_heads(environment, url)
    if list(after) != sorted(job.to_heads):
        raise _Failed(
            f"After the run the database holds {', '.join(after) or 'nothing'}, not "
            f"{', '.join(sorted(job.to_heads)) or 'nothing'} as planned."
        )
    return after


def _check_still_approved(job: Job, log: JobLog) -> None:
    """The last gate, whatever put the job in the queue: the approvals the policy asks for,
    given for this very plan, and revision files unchanged since it was made."""
    missing = job.approvals_missing()
    if missing:
        required = job.environment.required_approvals
        raise _Failed(
            f"{job.environment.name} needs {required} approval{'s' if required != 1 else ''} "
            f"of this exact plan and {missing} {'is' if missing == 1 else 'are'} missing; "
            "nothing was changed."
        )
    if job.revisions:
        index, error = job.environment.project.load_scripts()
        if index is None:
            raise _Failed(f"The scripts cannot be read: {error}")
        if scripts_digest(index, job.revisions) != job.scripts_sha256:
            raise _Failed(
                "The revision files changed since this job was planned (and approved); "
                "nothing was changed. Plan it again."
            )
    if job.environment.required_approvals:
        count = job.approvals_counted().count()
        log.add(f"Approved by {count} of the {job.environment.required_approvals} required.")


def _restore(job: Job, url: str, log: JobLog) -> None:
    backup = job.restore_from
    assert backup is not None
    path = Path(backup.path)
    log.add(f"Restoring backup #{backup.pk} ({path.name})…")
    try:
        log.add(backups.verify_backup(path, backup.kind, expected_sha256=backup.sha256))
        backups.restore_database(
            url, path, backup.kind, timeout=settings.RETORT_JOB_TIMEOUT, on_line=log.add
        )
    except backups.BackupError as exc:
        raise _Failed(f"The restore failed: {exc}") from None
    log.add("Restored.")


def job_run(*, job_id: int) -> Job | None:
    """Run a queued job (the Celery task). At most once: a second delivery finds it taken."""
    now = timezone.now()
    won = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
        status=Job.Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker_host=socket.gethostname()[:200],
        worker_pid=os.getpid(),
    )
    if not won:
        return None
    job = Job.objects.select_related("environment__project", "restore_from").get(pk=job_id)
    with transaction.atomic():
        job_audit(
            job,
            "job_started",
            system_actor="worker",
            details={"worker": f"{job.worker_host}:{job.worker_pid}"},
        )
    log = JobLog(job)
    status, error, exit_code, heads = Job.Status.SUCCEEDED, "", 0, None
    with _heartbeat(job, log):
        try:
            heads = _execute(job, log)
            log.add(f"Done: the database holds {', '.join(heads) or 'nothing'}.")
        except _Failed as exc:
            status, error, exit_code = Job.Status.FAILED, str(exc), exc.exit_code
            log.add(f"FAILED: {exc}")
        except Exception as exc:  # noqa: BLE001 - a job must never stay "running"
            status, error, exit_code = Job.Status.FAILED, f"Retort error: {exc}", None
            log.add(f"FAILED: Retort error: {exc}")
    _snapshot_after(job, log)
    return _finish(job, status=status, error=error, exit_code=exit_code, heads=heads)


def _snapshot_after(job: Job, log: JobLog) -> None:
    """Read the environment again before the job ends, so the overview shows the new state
    and the change it finds is recorded as this job's (it is still `running`)."""
    close_old_connections()
    try:
        # The worker reads once and keeps no connection to the database it has just changed.
        environment_read(environment=job.environment, keep_alive=0)
    except Exception as exc:  # noqa: BLE001 - a failed read must not keep the job running
        log.add(f"The state could not be re-read afterwards: {exc}")
        log.flush()


def _finish(job: Job, *, status, error: str, exit_code, heads) -> Job:
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(
            status=status,
            error=error,
            exit_code=exit_code,
            finished_at=timezone.now(),
            result_heads=list(heads) if heads is not None else None,
        )
        job.refresh_from_db()
        if updated:
            job_audit(job, f"job_{status}", system_actor="worker", details={"error": error})
            notify.job_event(job, "job_finished")
    if updated and job.backup_id:
        backups_prune(environment=job.environment)
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


def job_preview_sql(*, job_id: int) -> Job | None:
    """Capture the exact SQL of the plan with `alembic ... --sql` (the worker runs env.py)."""
    job = Job.objects.select_related("environment__project").filter(pk=job_id).first()
    if job is None or job.sql_status != Job.Preview.PENDING:
        return job
    project = job.environment.project
    args = _sql_args(job)
    try:
        url = job.environment.get_url()
        result = project.run_alembic(
            args, url=url, timeout=min(settings.RETORT_JOB_TIMEOUT, 300), separate_stdout=True
        )
    except (UrlUnavailable, RunnerError) as exc:
        return _preview_done(job, Job.Preview.UNAVAILABLE, note=str(exc))
    if not result.ok:
        last = [line for line in result.output.splitlines() if line.strip()][-3:]
        reason = " ".join(last) or f"alembic exited with code {result.exit_code}"
        return _preview_done(job, Job.Preview.UNAVAILABLE, note=reason[-1000:])
    return _preview_done(job, Job.Preview.READY, sql=result.stdout)


def _sql_args(job: Job) -> list[str]:
    start = ",".join(sorted(job.from_heads))
    if job.kind == Job.Kind.STAMP:
        # Offline, alembic refuses --purge: render the stamp from the planned heads, which
        # ends in the same version table as the run's purge-then-stamp.
        return ["stamp", f"{start}:{job.target}" if start else job.target, "--sql"]
    end = job.to_heads[0] if len(job.to_heads) == 1 else job.target
    if job.kind == Job.Kind.DOWNGRADE:
        end = end if job.to_heads else "base"
        return ["downgrade", f"{start}:{end}", "--sql"]
    return ["upgrade", f"{start}:{end}" if start else end, "--sql"]


def _preview_done(job: Job, status: str, *, sql: str = "", note: str = "") -> Job:
    digest = hashlib.sha256(sql.encode()).hexdigest() if sql else ""
    Job.objects.filter(pk=job.pk, sql_status=Job.Preview.PENDING).update(
        sql_status=status, sql_preview=sql, sql_sha256=digest, sql_note=note
    )
    job.refresh_from_db()
    return job


def jobs_reap(*, now=None) -> list[int]:
    """Running jobs whose worker stopped beating become `interrupted`, freeing the environment."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.RETORT_HEARTBEAT_TIMEOUT)
    reaped = []
    for job in Job.objects.select_related("environment__project").filter(
        status=Job.Status.RUNNING, heartbeat_at__lt=cutoff
    ):
        with transaction.atomic():
            message = (
                f"The worker {job.worker_host}:{job.worker_pid} stopped (no heartbeat since "
                f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC). Check the database's state and "
                "its backup before the next job."
            )
            won = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(
                status=Job.Status.INTERRUPTED, finished_at=now, error=message
            )
            if won:
                job.refresh_from_db()
                job_audit(job, "job_interrupted", system_actor="reaper", details={"error": message})
                notify.job_event(job, "job_finished")
                reaped.append(job.pk)
    return reaped
