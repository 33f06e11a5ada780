"""A job's life: every change of a job's status is a call to `move`, here and nowhere else.

    planned ──submit──▶ awaiting_approval ──approved, queue──▶ queued ──▶ running ──▶ succeeded
       │                  ├──reject──▶ rejected                ▲                  ├──▶ failed
       │                  └──expire──▶ expired                 │                  └──▶ interrupted
       ├──queue (no approval needed) ──────────────────────────┘
       └──discard, cancel──▶ cancelled   (awaiting_approval and queued may be cancelled too)

`move` makes one change in one transaction: the conditional update (the job must still be in a
status it may leave for the new one, so of two requests racing, one wins and the other is
refused), the audit event, and the webhook message; a job moved to `queued` is sent to a worker
once the transaction commits. The planning, approval and execution modules decide *whether* a
job moves; this module is *how*.

A refusal — of a move, or of a request by the policy — is one exception type, `Refused`: a
sentence for a person and a code for a program (`refusal_status` maps it to HTTP).
"""

from __future__ import annotations

from django.db import IntegrityError, transaction

from environments import dispatch, notify
from environments.audit import audit_record
from environments.models import Environment, Job

S = Job.Status

# the statuses a job may be in to move to each status
SOURCES: dict[str, tuple[str, ...]] = {
    S.AWAITING_APPROVAL: (S.PLANNED,),
    S.QUEUED: (S.PLANNED, S.AWAITING_APPROVAL),
    S.CANCELLED: Job.WAITING,
    S.REJECTED: (S.AWAITING_APPROVAL,),
    S.EXPIRED: (S.AWAITING_APPROVAL,),
    S.RUNNING: (S.QUEUED,),
    S.SUCCEEDED: (S.RUNNING,),
    S.FAILED: (S.RUNNING,),
    S.INTERRUPTED: (S.RUNNING,),
}

_WHO_MAY_NOT = {"not_requester", "not_approver", "self_approval", "wrong_target"}


class Refused(Exception):
    """A request refused, or a job that cannot move: `str()` says why in words, `code` is a
    reason a program can test ("job_state", "not_approver", "stale_plan", …; "" when the
    request itself makes no sense)."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def refusal_status(exc: Refused) -> int:
    """The HTTP status for a refusal: 403 when the person may not, 409 when the job's state
    or the policy stands in the way, 400 when the request itself makes no sense."""
    if exc.code in _WHO_MAY_NOT:
        return 403
    return 409 if exc.code else 400


def move(
    job: Job,
    to: str,
    *,
    event: str,
    user=None,
    system_actor: str | None = None,
    details: dict | None = None,
    fields: dict | None = None,
    sources: tuple[str, ...] | None = None,
    notice: str | None = None,
    comment: str = "",
    refusal: str = "it cannot move on now.",
) -> Job:
    """Move `job` to status `to` with the audit event `event` (by `user` or `system_actor`),
    setting `fields` too; put `notice` in the webhook outbox. `sources` narrows the statuses
    the job may leave (default: every status that may lead to `to`). Refused with
    code "job_state" (and `refusal` as the end of the sentence) when the job has moved on,
    and with code "environment_busy" when another job of its environment is queued or
    running. Returns the job as stored afterwards."""
    allowed = sources if sources is not None else SOURCES[to]
    assert set(allowed) <= set(SOURCES[to]), f"{allowed} cannot lead to {to}"
    try:
        with transaction.atomic():
            won = Job.objects.filter(pk=job.pk, status__in=allowed).update(
                status=to, **(fields or {})
            )
            _refresh(job)
            if not won:
                raise Refused(f"Job #{job.pk} is {job.status}; {refusal}", code="job_state")
            job_audit(job, event, user=user, system_actor=system_actor, details=details)
            if notice is not None:
                notify.job_event(job, notice, actor=user, comment=comment)
            if to == S.QUEUED:
                dispatch.job_run_on_commit(job)
    except IntegrityError:  # the one-active-job-per-environment constraint
        active = Job.objects.filter(environment=job.environment_id, status__in=Job.ACTIVE).first()
        which = f" (job #{active.pk}, {active.status})" if active else ""
        job.refresh_from_db()
        raise Refused(
            f"{job.environment.name} already has a job queued or running{which}; one at a time.",
            code="environment_busy",
        ) from None
    return job


def _refresh(job: Job) -> None:
    """The job as stored, keeping the environment (and its project) it was loaded with: a job
    never changes environment, and the audit event names both."""
    environment = job.environment if Job.environment.is_cached(job) else None
    job.refresh_from_db()
    if environment is not None and environment.pk == job.environment_id:
        job.environment = environment


def job_audit(job: Job, action: str, *, user=None, system_actor=None, details=None) -> None:
    """An audit event about `job`, with its environment, revisions, kind, target and status."""
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
    """Record a refusal by the policy (in a transaction of its own: it must outlive the
    caller's, which rolls back) and raise it. Call it outside any transaction about to fail."""
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


def name_of(user) -> str:
    return getattr(user, "username", "") or "An anonymous user"
