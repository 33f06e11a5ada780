"""The one gate between a planned job and a worker: pages, the admin, the API and the CLI all
pass through these functions, and the worker checks the approvals once more before it runs.

An approval means "I read this exact plan for this exact database": it records the plan's
SHA-256 (from-heads, target, ordered revisions, the revision files' contents, the rendered SQL,
whether a backup is taken). Plan the job again and approvals of the earlier plan stop counting.

Every refusal is raised as `transitions.Refused` with a code and a sentence, and recorded as an
audit event (`approval_refused` or `job_refused`) in a transaction of its own. An approval
becomes a queued job in `_record_decision`, through `transitions.move`.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from environments import notify, rehearsals, roles, safe_runs
from environments.models import Approval, Environment, Job
from environments.planning import job_request, job_sql_request, plan_outdated
from environments.promotion import promotion_verdict
from environments.transitions import Refused, job_audit, move, refuse


def _short(sha: str) -> str:
    return sha[:12] + "…" if sha else "(none)"


def _check_promotion(job: Job, user) -> None:
    verdict = promotion_verdict(job, read=True)
    if not verdict.ok:
        refuse("promotion_rule", verdict.text, user=user, job=job)


def _check_lock_review(job: Job, user) -> None:
    refusal = safe_runs.review_refusal(job)
    if refusal:
        refuse("lock_review", refusal, user=user, job=job)


def job_request_and_submit(*, environment, user, **request) -> Job:
    """Plan a job and ask for it to run in one step (the API, the CLI). A refused submit leaves
    no planned job behind: it is discarded, audited with the reason, and the refusal raised."""
    job = job_request(environment=environment, user=user, **request)
    try:
        return job_submit(job=job, user=user)
    except Refused as exc:
        with contextlib.suppress(Refused):  # not planned any more: nothing to discard
            move(
                job,
                Job.Status.CANCELLED,
                sources=(Job.Status.PLANNED,),
                event="job_discarded",
                user=user,
                details={"reason": exc.code or "refused", "message": str(exc)},
                fields={"finished_at": timezone.now()},
            )
        raise


def job_submit(*, job: Job, user) -> Job:
    """Ask for a planned job to run: straight to the queue where the policy wants no
    approvals, else `awaiting_approval` until enough approvers have read and approved it."""
    environment = job.environment
    if not roles.may_request(user, environment.project):
        refuse(
            "not_requester",
            f"{user.username} may read {environment.name} but not ask for jobs to run there.",
            user=user,
            job=job,
        )
    if job.status != Job.Status.PLANNED:
        raise Refused(
            f"Job #{job.pk} is {job.status}; only a planned job can be submitted.", code="job_state"
        )
    _check_promotion(job, user)
    _check_lock_review(job, user)
    required = job.required_approvals
    if not required:
        unrehearsed = rehearsals.rehearsal_refusal(job)
        if unrehearsed:
            refuse("rehearsal_required", unrehearsed, user=user, job=job)
        return _queue(job, user=user)
    if job.sql_status == Job.Preview.ON_REQUEST:  # approvers read the plan with its SQL
        job = job_sql_request(job=job)
    now = timezone.now()
    expires_at = now + timedelta(hours=environment.approval_expiry_hours)
    return move(
        job,
        Job.Status.AWAITING_APPROVAL,
        event="approval_requested",
        user=user,
        details={"required": required, "expires_at": expires_at.isoformat()},
        fields={"submitted_at": now, "expires_at": expires_at},
        notice="job_requested",
        refusal="only a planned job can be submitted.",
    )


def job_queue(*, job: Job, user) -> Job:
    """Queue a job by any path. A planned job is submitted; a job awaiting approval goes only
    with every approval its environment's policy asks for, given to the plan as it stands."""
    if job.status == Job.Status.PLANNED:
        return job_submit(job=job, user=user)
    if job.status != Job.Status.AWAITING_APPROVAL:
        raise Refused(f"Job #{job.pk} is {job.status}; it cannot be queued.", code="job_state")
    environment = job.environment
    if not roles.may_act_on_jobs(user, environment):
        refuse("not_requester", f"{user.username} may not queue jobs.", user=user, job=job)
    missing = job.approvals_missing()
    if missing:
        required = job.required_approvals
        refuse(
            "approvals_missing",
            f"{environment.name} needs {required} approval{'s' if required != 1 else ''} of "
            f"this plan before it runs; {required - missing} given. Nothing was queued.",
            user=user,
            job=job,
        )
    reasons = plan_outdated(job)
    if reasons:
        refuse("stale_plan", _stale_message(reasons), user=user, job=job)
    _check_promotion(job, user)
    _check_lock_review(job, user)
    return _queue(job, user=user)


def _stale_message(reasons: list[str]) -> str:
    return (
        "This plan no longer matches: " + " ".join(reasons) + " Plan the job again; approvals "
        "of the old plan will not count."
    )


def decision_refusal(
    job: Job,
    user,
    decision: str,
    plan_sha256: str,
    claimed: Environment | None,
    *,
    expire: bool = True,
) -> tuple[str, str] | None:
    """The first reason `user` may not record `decision` on `job`, as (code, sentence)."""
    environment = job.environment
    if claimed is not None and claimed.pk != job.environment_id:
        return (
            "wrong_target",
            f"Job #{job.pk} is for {environment.project.name}/{environment.name}, not "
            f"{claimed.project.name}/{claimed.name}; nothing was recorded.",
        )
    expired = job.expires_at is not None and job.expires_at <= timezone.now()
    if job.status == Job.Status.AWAITING_APPROVAL and expired:
        if expire:
            with transaction.atomic():
                _expire(job)
        return (
            "expired",
            f"Job #{job.pk} expired at {job.expires_at:%Y-%m-%d %H:%M} UTC unapproved.",
        )
    if job.status != Job.Status.AWAITING_APPROVAL:
        return (
            "not_awaiting",
            f"Job #{job.pk} is {job.status.replace('_', ' ')}; only a job awaiting approval "
            "can be approved or rejected.",
        )
    if job.requested_by_id == user.pk and not environment.requester_may_approve:
        return (
            "self_approval",
            f"You requested job #{job.pk}: someone else must "
            f"{'approve' if decision == Approval.Decision.APPROVE else 'reject'} it (four eyes). "
            "You can cancel it.",
        )
    if not roles.may_approve(user, environment):
        return (
            "not_approver",
            f"{user.username} may not approve or reject jobs for {environment.name}: "
            f"only {roles.approver_label(environment)} may.",
        )
    if plan_sha256 != job.plan_sha256:
        return (
            "stale_plan",
            f"You read plan {_short(plan_sha256)}, but job #{job.pk}'s plan is now "
            f"{_short(job.plan_sha256)}"
            f"{' (planned again since)' if job.replanned_at else ''}. Read it again.",
        )
    if job.kind != Job.Kind.RESTORE and job.sql_status == Job.Preview.PENDING:
        return ("preview_pending", "The SQL is still being rendered; decide once you can read it.")
    earlier = job.approvals.filter(user=user, plan_sha256=job.plan_sha256).first()
    if earlier is not None:
        return (
            "already_decided",
            f"You already {earlier.decision}d this plan at "
            f"{earlier.created_at:%Y-%m-%d %H:%M:%S} UTC.",
        )
    if decision == Approval.Decision.APPROVE and not job.approvals_missing():
        return ("enough_approvals", f"Job #{job.pk} already has the approvals it needs.")
    unrehearsed = rehearsals.rehearsal_refusal(job) if decision == Approval.Decision.APPROVE else ""
    if unrehearsed:
        return ("rehearsal_required", unrehearsed)
    return None


def job_decide(
    *,
    job: Job,
    user,
    decision: str,
    plan_sha256: str,
    comment: str = "",
    claimed: Environment | None = None,
) -> Job:
    """Approve or reject `job` as `user`, who read the plan `plan_sha256`. The last approval
    the policy needs queues the job, in the same transaction; two approvers at the same moment
    are serialised on the job's row, so the count is never exceeded."""
    if decision not in Approval.Decision.values:
        raise Refused("Approve or reject.")
    comment = (comment or "").strip()[:2000]

    def refused(refusal: tuple[str, str]):
        refuse(
            refusal[0],
            refusal[1],
            user=user,
            job=job,
            action="approval_refused",
            details={"decision": decision, "plan_sha256": plan_sha256},
        )

    refusal = decision_refusal(job, user, decision, plan_sha256, claimed)
    if refusal:
        refused(refusal)
    if decision == Approval.Decision.APPROVE:
        reasons = plan_outdated(job)
        if reasons:
            refused(("stale_plan", _stale_message(reasons)))
        verdict = promotion_verdict(job, read=True)
        if not verdict.ok:
            refused(("promotion_rule", verdict.text))
    with transaction.atomic():
        locked = (
            Job.objects.select_for_update(of=("self",))
            .select_related("environment__project", "requested_by")
            .get(pk=job.pk)
        )
        refusal = decision_refusal(locked, user, decision, plan_sha256, claimed)
        if refusal is None:
            try:
                with transaction.atomic():
                    Approval.objects.create(
                        job=locked,
                        user=user,
                        username=user.username,
                        decision=decision,
                        comment=comment,
                        plan_sha256=locked.plan_sha256,
                    )
            except IntegrityError:
                refusal = ("already_decided", "You already decided on this plan.")
        if refusal is None:
            _record_decision(locked, user, decision, comment)
    if refusal:
        job.refresh_from_db()
        refused(refusal)
    locked.refresh_from_db()
    return locked


def _record_decision(job: Job, user, decision: str, comment: str) -> None:
    """Inside the locked transaction: the audit event, the webhook, and the state change."""
    required = job.required_approvals
    given = job.approvals_counted().count()
    details = {"comment": comment, "plan_sha256": job.plan_sha256}
    if decision == Approval.Decision.REJECT:
        move(
            job,
            Job.Status.REJECTED,
            event="job_rejected",
            user=user,
            details=details,
            fields={"finished_at": timezone.now()},
            notice="job_rejected",
            comment=comment,
        )
        return
    job_audit(
        job, "job_approved", user=user, details=details | {"given": given, "required": required}
    )
    notify.job_event(job, "job_approved", actor=user, comment=comment)
    if given < required:
        return
    # Another job holding the environment leaves it approved, to be queued once that ends.
    with contextlib.suppress(Refused):
        _queue(job, user=user)


def _expire(job: Job) -> None:
    with contextlib.suppress(Refused):  # decided or cancelled meanwhile
        move(
            job,
            Job.Status.EXPIRED,
            event="job_expired",
            system_actor="expiry",
            details={"expires_at": job.expires_at.isoformat() if job.expires_at else None},
            fields={"finished_at": timezone.now()},
            notice="job_expired",
        )


def jobs_expire(*, now: datetime | None = None) -> list[int]:
    """Requests not approved in time expire (the beat task, and every approvals page)."""
    now = now or timezone.now()
    expired = []
    due = Job.objects.select_related("environment__project").filter(
        status=Job.Status.AWAITING_APPROVAL, expires_at__lte=now
    )
    for job in due:
        with transaction.atomic():
            _expire(job)
        if job.status == Job.Status.EXPIRED:
            expired.append(job.pk)
    return expired


def _queue(job: Job, *, user) -> Job:
    return move(
        job,
        Job.Status.QUEUED,
        event="job_queued",
        user=user,
        fields={"queued_at": timezone.now()},
        refusal="it cannot be queued now.",
    )
