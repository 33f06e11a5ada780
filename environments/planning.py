"""Planning: what a job will do, worked out before anything runs.

The web process plans statically, from the scripts (nothing is imported or run): where the
database stands, the revisions in the order alembic will run them, the heads afterwards, the
risks (`risks.py`) and a digest of the revision files. A worker renders the exact SQL
(`job_preview_sql`). A waiting job can be planned again, or cancelled; its status changes go
through `transitions.py`.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from environments import dispatch, risks, roles, safe_runs
from environments.core import plan
from environments.core.runner import RunnerError
from environments.models import Backup, Environment, Job, UrlUnavailable
from environments.reads import environment_read
from environments.transitions import Refused, job_audit, move, name_of, refuse


def _current_heads(environment: Environment, state=None) -> tuple[str, ...]:
    """What the environment holds: `state` when the caller has just read it, else a read."""
    state = state if state is not None else environment_read(environment=environment)
    if state.is_read_failure:
        raise Refused(f"{environment.name} cannot be read, so no job can be planned: {state.error}")
    return tuple(sorted(state.heads))


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
    environment: Environment,
    kind: str,
    target: str,
    restore_from: Backup | None,
    state=None,
    *,
    with_risks: bool = True,
) -> dict:
    """Everything a plan holds, from where the database stands now and the scripts as they
    are; raises Refused with the reason when there is nothing sensible to plan. Without
    `with_risks` the risks are left out (checking a plan is still current needs none)."""
    from_heads = _current_heads(environment, state)
    index, error = environment.project.load_scripts()
    if kind == Job.Kind.RESTORE:
        if restore_from is None or restore_from.environment_id != environment.pk:
            raise Refused("Choose one of this environment's backups to restore.")
        if not restore_from.available:
            raise Refused(f"Backup #{restore_from.pk} is no longer on disk.")
        to_heads, revisions, found, digest = sorted(restore_from.heads), [], [], ""
        target, limits = f"backup #{restore_from.pk}", None
    else:
        if kind not in Job.Kind.values or kind == Job.Kind.REHEARSE:
            raise Refused(f"{kind!r} is not a kind of job: upgrade, downgrade, stamp, restore.")
        if index is None:
            raise Refused(f"The scripts cannot be read: {error}")
        try:
            planned = plan.plan_job(index, kind, target, from_heads)
        except plan.PlanError as exc:
            raise Refused(str(exc)) from None
        if planned.changes_nothing:
            raise Refused(
                f"{environment.name} already holds {', '.join(from_heads) or 'nothing'}; "
                f"{kind} to {target!r} would change nothing."
            )
        to_heads, revisions = list(planned.to_heads), list(planned.revisions)
        found = risks.plan_risks(environment, index, revisions, kind) if with_risks else []
        digest = scripts_digest(index, revisions)
        try:
            limits = safe_runs.limits_for(environment, index, revisions)
        except safe_runs.LimitsUnreadable as exc:
            raise Refused(str(exc)) from None
    return {
        "target": target,
        "from_heads": list(from_heads),
        "to_heads": list(to_heads),
        "revisions": revisions,
        "findings": found,
        "scripts_sha256": digest,
        "run_limits": limits.as_json() if limits is not None else {},
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
    sql: bool = False,
) -> Job:
    """Plan a job from where the database stands now. Its SQL preview follows on a worker when
    someone will read it (`preview_wanted`; `sql` asks for it in any case), else it waits for
    `job_sql_request`. `take_backup` defaults to the environment's `backup_before_jobs`; a
    policy that makes backups mandatory refuses False."""
    if take_backup is None:
        take_backup = environment.backup_before_jobs
    if not roles.may_request(user, environment.project):
        refuse(
            "not_requester",
            f"{name_of(user)} may read {environment.name} but not change it: planning a job "
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
            sql_status=_preview_status(environment, kind, asked=sql),
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
    if not roles.may_act_on_jobs(user, job.environment):
        refuse(
            "not_requester",
            f"{name_of(user)} may not plan jobs for {job.environment.name}.",
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
            asked = locked.sql_status != Job.Preview.ON_REQUEST  # it was rendered once
            locked.sql_status = _preview_status(locked.environment, locked.kind, asked=asked)
            locked.sql_preview, locked.sql_sha256, locked.sql_note = "", "", ""
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


def plan_outdated(job: Job, state=None) -> list[str]:
    """Why a waiting job's plan no longer matches the database or the scripts (reads the
    database live, unless `state` is a read just made); empty when it still does."""
    environment = job.environment
    try:
        target = job.target if job.kind != Job.Kind.RESTORE else ""
        fields = _plan_fields(
            environment, job.kind, target, job.restore_from, state, with_risks=False
        )
    except Refused as exc:
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
    elif job.run_limits and fields["run_limits"] != job.run_limits:
        reasons.append(
            f"{environment.name}'s timeouts (or retries on a lock timeout) changed since the "
            "plan was made."
        )
    return reasons


def job_cancel(*, job: Job, user) -> Job:
    """Cancel a job that has not started: planned, awaiting approval, or queued."""
    if not roles.may_act_on_jobs(user, job.environment):
        refuse(
            "not_requester",
            f"{name_of(user)} may not cancel jobs for {job.environment.name}.",
            user=user,
            job=job,
        )
    return move(
        job,
        Job.Status.CANCELLED,
        event="job_cancelled",
        user=user,
        fields={"finished_at": timezone.now()},
        refusal="only a waiting job can be cancelled.",
    )


# --- the SQL preview (a worker runs it: alembic --sql runs env.py) -------------------------


def preview_wanted(environment: Environment) -> bool:
    """Whether a plan's SQL is read before it can run: by approvers (the policy asks for
    approvals), or by the lock review of its statements (`lock_review_blocks`,
    `lock_review_approval`). Otherwise it is rendered only when someone asks."""
    return bool(
        environment.required_approvals
        or environment.lock_review_blocks
        or environment.lock_review_approval
    )


def _preview_status(environment: Environment, kind: str, *, asked: bool) -> str:
    if kind == Job.Kind.RESTORE:
        return Job.Preview.NOT_NEEDED
    if asked or preview_wanted(environment):
        return Job.Preview.PENDING
    return Job.Preview.ON_REQUEST


def job_sql_request(*, job: Job, user=None) -> Job:
    """Render the SQL of a plan nobody had asked to read yet (a worker does it); nothing
    happens when it is rendered or rendering already. Approvals bind to the plan with its SQL,
    so a job that needs them asks for it by itself (`approvals.job_submit`)."""
    if user is not None and not roles.may_act_on_jobs(user, job.environment):
        refuse(
            "not_requester",
            f"{name_of(user)} may not ask for the SQL of {job.environment.name}'s jobs: it is "
            "rendered against the database, by whoever may plan or approve them.",
            user=user,
            job=job,
        )
    with transaction.atomic():
        asked = Job.objects.filter(
            pk=job.pk, sql_status=Job.Preview.ON_REQUEST, status__in=Job.WAITING
        ).update(sql_status=Job.Preview.PENDING)
        if asked:
            dispatch.job_preview_on_commit(job)
    job.refresh_from_db()
    return job


def job_preview_sql(*, job_id: int) -> Job | None:
    """Capture the exact SQL of the plan with `alembic ... --sql` (the worker runs env.py)."""
    job = Job.objects.select_related("environment__project").filter(pk=job_id).first()
    if job is None or job.sql_status != Job.Preview.PENDING:
        return job
    sql, note = sql_render(job)
    if note:
        return _preview_done(job, Job.Preview.UNAVAILABLE, note=note)
    return _preview_done(job, Job.Preview.READY, sql=sql)


def sql_render(job: Job) -> tuple[str, str]:
    """The exact SQL of `job`'s plan (`alembic … --sql` on its environment, through the
    project's command), and "" — or "" and why it could not be had."""
    try:
        result = job.environment.run_alembic(
            sql_args(job),
            url=job.environment.get_url(),
            timeout=min(settings.RETORT_JOB_TIMEOUT, 300),
            separate_stdout=True,
        )
    except (UrlUnavailable, RunnerError) as exc:
        return "", str(exc)
    if not result.ok:
        last = [line for line in result.output.splitlines() if line.strip()][-3:]
        reason = " ".join(last) or f"alembic exited with code {result.exit_code}"
        return "", reason[-1000:]
    return result.stdout, ""


def sql_digest(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest() if sql else ""


def sql_args(job: Job) -> list[str]:
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
    """Store the preview, with what the lock rules find in its SQL that the files did not
    show (before the plan's SHA-256 is known: the SQL is part of it)."""
    findings = job.findings + risks.sql_lock_risks(job, sql) if sql else job.findings
    Job.objects.filter(pk=job.pk, sql_status=Job.Preview.PENDING).update(
        sql_status=status,
        sql_preview=sql,
        sql_sha256=sql_digest(sql),
        sql_note=note,
        findings=findings,
    )
    job.refresh_from_db()
    return job
