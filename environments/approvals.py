"""The one gate between a planned job and a worker: pages, the admin, the API and the CLI all
pass through these functions, and the worker checks the approvals once more before it runs.

An approval means "I read this exact plan for this exact database": it records the plan's
SHA-256 (from-heads, target, ordered revisions, the revision files' contents, the rendered SQL,
whether a backup is taken). Plan the job again and approvals of the earlier plan stop counting.

Every refusal is raised as `jobs.Refused` with a code and a sentence, and recorded as an audit
event (`approval_refused` or `job_refused`) in a transaction of its own.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from environments import jobs, notify, roles
from environments.core.status import Status
from environments.jobs import JobRefused, Refused, job_audit, plan_outdated, queue_now, refuse
from environments.models import Approval, Environment, Job
from environments.services import environment_read

READ_FAILURES = [status.value for status in Status if status.is_read_failure]


def _short(sha: str) -> str:
    return sha[:12] + "…" if sha else "(none)"


def _revisions(ids) -> str:
    return ", ".join(ids) or "nothing"


# --- the promotion rule -------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The promotion rule's answer for one job: does it apply, does it hold, and why."""

    applies: bool
    ok: bool
    text: str
    held_since: datetime | None = None
    eligible_at: datetime | None = None


def _duration(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours < 1:
        return f"{max(int(delta.total_seconds() // 60), 0)} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def promotion_verdict(job: Job, *, read: bool = False, now: datetime | None = None) -> Verdict:
    """Whether the environment the policy promotes from has held the job's target revisions
    for long enough. Walks that environment's reads (snapshots) back from the newest: it held
    them since the oldest read of the unbroken run that holds them. Reads that failed say
    nothing and are skipped. `read=True` reads the source environment live first."""
    environment = job.environment
    source = environment.promotion_from
    if source is None:
        return Verdict(False, True, "No promotion rule: this environment may move to any revision.")
    if job.kind not in (Job.Kind.UPGRADE, Job.Kind.STAMP) or not job.to_heads:
        return Verdict(
            False, True, f"The promotion rule covers upgrades and stamps; this is a {job.kind}."
        )
    if read:
        environment_read(environment=source)
    index, error = environment.project.load_scripts()
    if index is None or index.revision_map is None:
        return Verdict(
            True, False, f"The scripts cannot be read, so the rule cannot be checked: {error}"
        )
    wanted = sorted(job.to_heads)
    hours = environment.promotion_min_hours
    now = now or timezone.now()
    cutoff = now - timedelta(hours=hours)
    holds_cache: dict[tuple[str, ...], bool] = {}

    def holds(heads) -> bool:
        key = tuple(sorted(heads))
        if key not in holds_cache:
            known = [head for head in key if index.knows(head)]
            applied = set(index.applied(known)) if known else set()
            holds_cache[key] = all(revision in applied for revision in wanted)
        return holds_cache[key]

    since = None
    reads = (
        source.snapshots.exclude(status__in=READ_FAILURES)
        .order_by("-checked_at", "-id")
        .values_list("checked_at", "heads")
    )
    newest_heads = None
    for checked_at, heads in reads.iterator(chunk_size=500):
        if newest_heads is None:
            newest_heads = heads
        if not holds(heads):
            break
        since = checked_at
        if checked_at <= cutoff:
            break
    what = _revisions(wanted)
    if since is None:
        if newest_heads is None:
            text = f"{source.name} has never been read, so it is not known to hold {what}."
        else:
            text = (
                f"{source.name} does not hold {what} (it holds {_revisions(newest_heads)}); "
                f"{environment.name} may only move to revisions {source.name} holds."
            )
        return Verdict(True, False, text)
    held = now - since
    eligible_at = since + timedelta(hours=hours)
    asked = f"the policy asks for {hours} h" if hours else "the policy asks only that it holds them"
    if since <= cutoff:
        if not hours:
            text = f"{source.name} holds {what}, as the policy asks."
        else:
            text = f"{source.name} has held {what} for at least {_duration(held)}; {asked}."
        return Verdict(True, True, text, since, eligible_at)
    text = (
        f"{source.name} has held {what} for only {_duration(held)}; {asked}. "
        f"Eligible from {eligible_at:%Y-%m-%d %H:%M} UTC."
    )
    return Verdict(True, False, text, since, eligible_at)


# --- the gate -----------------------------------------------------------------------------


def _check_promotion(job: Job, user) -> None:
    verdict = promotion_verdict(job, read=True)
    if not verdict.ok:
        refuse("promotion_rule", verdict.text, user=user, job=job)


def job_request_and_submit(*, environment, user, **request) -> Job:
    """Plan a job and ask for it to run in one step (the API, the CLI). A refused submit leaves
    no planned job behind: it is discarded, audited with the reason, and the refusal raised."""
    job = jobs.job_request(environment=environment, user=user, **request)
    try:
        return job_submit(job=job, user=user)
    except JobRefused as exc:
        with transaction.atomic():
            won = Job.objects.filter(pk=job.pk, status=Job.Status.PLANNED).update(
                status=Job.Status.CANCELLED, finished_at=timezone.now()
            )
            if won:
                job.refresh_from_db()
                job_audit(
                    job,
                    "job_discarded",
                    user=user,
                    details={"reason": getattr(exc, "code", "refused"), "message": str(exc)},
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
    required = environment.required_approvals
    if not required:
        return queue_now(job, user=user, from_status=Job.Status.PLANNED)
    now = timezone.now()
    with transaction.atomic():
        won = Job.objects.filter(pk=job.pk, status=Job.Status.PLANNED).update(
            status=Job.Status.AWAITING_APPROVAL,
            submitted_at=now,
            expires_at=now + timedelta(hours=environment.approval_expiry_hours),
        )
        if not won:
            job.refresh_from_db()
            raise Refused(
                f"Job #{job.pk} is {job.status}; only a planned job can be submitted.",
                code="job_state",
            )
        job.refresh_from_db()
        job_audit(
            job,
            "approval_requested",
            user=user,
            details={"required": required, "expires_at": job.expires_at.isoformat()},
        )
        notify.job_event(job, "job_requested", actor=user)
    return job


def job_queue(*, job: Job, user) -> Job:
    """Queue a job by any path. A planned job is submitted; a job awaiting approval goes only
    with every approval its environment's policy asks for, given to the plan as it stands."""
    if job.status == Job.Status.PLANNED:
        return job_submit(job=job, user=user)
    if job.status != Job.Status.AWAITING_APPROVAL:
        raise Refused(f"Job #{job.pk} is {job.status}; it cannot be queued.", code="job_state")
    environment = job.environment
    if not (roles.may_request(user, environment.project) or roles.may_approve(user, environment)):
        refuse("not_requester", f"{user.username} may not queue jobs.", user=user, job=job)
    missing = job.approvals_missing()
    if missing:
        required = environment.required_approvals
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
    return queue_now(job, user=user, from_status=Job.Status.AWAITING_APPROVAL)


def _stale_message(reasons: list[str]) -> str:
    return (
        "This plan no longer matches: " + " ".join(reasons) + " Plan the job again; approvals "
        "of the old plan will not count."
    )


def _decision_refusal(
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
        raise JobRefused("Approve or reject.")
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

    refusal = _decision_refusal(job, user, decision, plan_sha256, claimed)
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
        refusal = _decision_refusal(locked, user, decision, plan_sha256, claimed)
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
    required = job.environment.required_approvals
    given = job.approvals_counted().count()
    details = {"comment": comment, "plan_sha256": job.plan_sha256}
    if decision == Approval.Decision.REJECT:
        Job.objects.filter(pk=job.pk).update(status=Job.Status.REJECTED, finished_at=timezone.now())
        job.status = Job.Status.REJECTED
        job_audit(job, "job_rejected", user=user, details=details)
        notify.job_event(job, "job_rejected", actor=user, comment=comment)
        return
    job_audit(
        job, "job_approved", user=user, details=details | {"given": given, "required": required}
    )
    notify.job_event(job, "job_approved", actor=user, comment=comment)
    if given < required:
        return
    # Another job holding the environment leaves it approved, to be queued once that ends.
    with contextlib.suppress(JobRefused):
        queue_now(job, user=user, from_status=Job.Status.AWAITING_APPROVAL)


def _expire(job: Job) -> None:
    won = Job.objects.filter(pk=job.pk, status=Job.Status.AWAITING_APPROVAL).update(
        status=Job.Status.EXPIRED, finished_at=timezone.now()
    )
    if won:
        job.status = Job.Status.EXPIRED
        job_audit(
            job,
            "job_expired",
            system_actor="expiry",
            details={"expires_at": job.expires_at.isoformat() if job.expires_at else None},
        )
        notify.job_event(job, "job_expired")


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


# --- what an approver sees ----------------------------------------------------------------


@dataclass
class ApprovalState:
    """Where a job stands with its policy, for the pages and the API."""

    required: int
    counted: list[Approval]
    stale: list[Approval]
    rejected: list[Approval]
    verdict: Verdict
    outdated: list[str]
    may_decide: bool
    why_not: str

    @property
    def given(self) -> int:
        return len(self.counted)


def approval_state(job: Job, user, *, check_plan: bool = True, snapshot=None) -> ApprovalState:
    approvals = list(job.approvals.all())
    current = job.plan_sha256
    counted = [a for a in approvals if a.plan_sha256 == current and a.decision == "approve"]
    stale = [a for a in approvals if a.plan_sha256 != current]
    rejected = [a for a in approvals if a.plan_sha256 == current and a.decision == "reject"]
    replannable = job.status in (Job.Status.PLANNED, Job.Status.AWAITING_APPROVAL)
    outdated = plan_outdated(job, snapshot) if check_plan and replannable else []
    refusal = None
    if job.status == Job.Status.AWAITING_APPROVAL:
        refusal = _decision_refusal(job, user, "approve", current, None, expire=False)
    return ApprovalState(
        required=job.environment.required_approvals,
        counted=counted,
        stale=stale,
        rejected=rejected,
        verdict=promotion_verdict(job),
        outdated=outdated,
        may_decide=job.status == Job.Status.AWAITING_APPROVAL and refusal is None,
        why_not=refusal[1] if refusal else "",
    )


@dataclass(frozen=True)
class OtherEnvironment:
    environment: Environment
    heads: list[str]
    status: str
    checked_at: datetime | None
    holds_target: bool | None  # None: unknown (never read, or unknown revisions)


def other_environments(job: Job) -> list[OtherEnvironment]:
    """What the project's other environments hold (their latest reads), and whether each
    already holds the revisions this job moves to: the approver's view of the promotion."""
    index, _ = job.environment.project.load_scripts()
    wanted = sorted(job.to_heads)
    found = []
    siblings = job.environment.project.environments.exclude(pk=job.environment_id)
    for environment in siblings.order_by("position", "name"):
        snapshot = environment.latest_snapshot()
        holds = None
        if snapshot is not None and index is not None and index.revision_map is not None:
            heads = list(snapshot.heads)
            if not snapshot.is_read_failure and all(index.knows(h) for h in heads):
                applied = set(index.applied(heads)) if heads else set()
                holds = all(revision in applied for revision in wanted)
        found.append(
            OtherEnvironment(
                environment=environment,
                heads=list(snapshot.heads) if snapshot else [],
                status=snapshot.status if snapshot else "",
                checked_at=snapshot.checked_at if snapshot else None,
                holds_target=holds,
            )
        )
    return found
