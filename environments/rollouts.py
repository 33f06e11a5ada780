"""What people do to a rollout: submit it, approve or reject it (once, for its whole set of
plans), pause, resume, cancel it, retry its failed targets, skip one. Pages, the API and the CLI
all come through here; status changes go through `rollout_transitions.rollout_move`.

The approval follows the strictest policy among the targets: as many approvals as the most
demanding one asks, four eyes unless every target lets the requester approve, and an approver
each target's policy accepts. Approvals bind to the rollout's `plan_sha256`.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from environments import notify, roles
from environments.models import Environment, Job, Rollout, RolloutApproval, RolloutTarget
from environments.planning import scripts_digest
from environments.rollout_transitions import rollout_audit, rollout_move, target_counts
from environments.transitions import Refused, move, name_of, refuse

R = Rollout.Status
T = RolloutTarget.State


def _may_act(user, rollout: Rollout, what: str) -> None:
    if not roles.may_request(user, rollout.project):
        refuse(
            "not_requester",
            f"{name_of(user)} may not {what} rollouts in {rollout.project.name}.",
            user=user,
            action="rollout_refused",
            details={"rollout": rollout.pk},
        )


def _target_environments(rollout: Rollout) -> list[Environment]:
    ids = rollout.targets.exclude(plan=-1).values_list("environment_id", flat=True)
    return list(Environment.objects.filter(pk__in=ids).select_related("project", "approver_group"))


def rollout_submit(*, rollout: Rollout, user) -> Rollout:
    """Ask for a planned rollout to run: at once where no target's policy asks for approvals,
    else once enough approvers have read its plans and approved."""
    _may_act(user, rollout, "submit")
    if rollout.status != R.PLANNED:
        raise Refused(
            f"Rollout #{rollout.pk} is {rollout.status}; only a planned rollout can be submitted.",
            code="job_state",
        )
    now = timezone.now()
    if not rollout.required_approvals:
        return rollout_move(
            rollout,
            R.RUNNING,
            event="rollout_started",
            user=user,
            fields={"submitted_at": now, "started_at": now},
        )
    hours = min((e.approval_expiry_hours for e in _target_environments(rollout)), default=24)
    return rollout_move(
        rollout,
        R.AWAITING_APPROVAL,
        event="rollout_approval_requested",
        user=user,
        details={"required": rollout.required_approvals},
        fields={"submitted_at": now, "expires_at": now + timedelta(hours=hours)},
        notice="rollout_requested",
    )


def decision_refusal(rollout: Rollout, user, decision: str, plan_sha256: str):
    """The first reason `user` may not record `decision` on `rollout`, as (code, sentence)."""
    if rollout.status != R.AWAITING_APPROVAL:
        return (
            "not_awaiting",
            f"Rollout #{rollout.pk} is {rollout.status.replace('_', ' ')}; only a rollout "
            "awaiting approval can be approved or rejected.",
        )
    if rollout.expires_at is not None and rollout.expires_at <= timezone.now():
        return (
            "expired",
            f"Rollout #{rollout.pk} expired at {rollout.expires_at:%Y-%m-%d %H:%M} UTC.",
        )
    if rollout.requested_by_id == user.pk and not rollout.requester_may_approve:
        return (
            "self_approval",
            f"You requested rollout #{rollout.pk}: someone else must decide on it (four eyes).",
        )
    seen = set()
    for environment in _target_environments(rollout):
        if environment.approver_group_id in seen:
            continue
        seen.add(environment.approver_group_id)
        if not roles.may_approve(user, environment):
            return (
                "not_approver",
                f"{user.username} may not approve {environment.name}, one of the rollout's "
                f"targets: only {roles.approver_label(environment)} may.",
            )
    if plan_sha256 != rollout.plan_sha256:
        return (
            "stale_plan",
            f"You read plans {plan_sha256[:12] or '(none)'}…, but rollout #{rollout.pk}'s are "
            f"{rollout.plan_sha256[:12]}…. Read them again.",
        )
    if rollout.approvals.filter(user=user, plan_sha256=rollout.plan_sha256).exists():
        return ("already_decided", "You already decided on these plans.")
    return None


def _scripts_changed(rollout: Rollout) -> bool:
    index, _ = rollout.project.load_scripts()
    if index is None:
        return True
    return any(
        scripts_digest(index, plan["revisions"]) != plan["scripts_sha256"] for plan in rollout.plans
    )


def rollout_decide(
    *, rollout: Rollout, user, decision: str, plan_sha256: str, comment: str = ""
) -> Rollout:
    """Approve or reject the rollout's plans as `user`; the last approval the strictest policy
    asks for starts it, in the same transaction."""
    if decision not in RolloutApproval.Decision.values:
        raise Refused("Approve or reject.")
    comment = (comment or "").strip()[:2000]

    def refused(refusal):
        refuse(
            refusal[0],
            refusal[1],
            user=user,
            action="approval_refused",
            details={"rollout": rollout.pk, "decision": decision, "plan_sha256": plan_sha256},
        )

    refusal = decision_refusal(rollout, user, decision, plan_sha256)
    if refusal and refusal[0] == "expired":
        with contextlib.suppress(Refused):
            rollout_move(
                rollout,
                R.EXPIRED,
                event="rollout_expired",
                system_actor="expiry",
                fields={"finished_at": timezone.now()},
                notice="rollout_expired",
            )
    if refusal:
        refused(refusal)
    if decision == RolloutApproval.Decision.APPROVE and _scripts_changed(rollout):
        refused(
            (
                "stale_plan",
                "The revision files changed since the rollout was planned; plan it again.",
            )
        )
    with transaction.atomic():
        locked = Rollout.objects.select_for_update().select_related("project").get(pk=rollout.pk)
        refusal = decision_refusal(locked, user, decision, plan_sha256)
        if refusal is None:
            try:
                with transaction.atomic():
                    RolloutApproval.objects.create(
                        rollout=locked,
                        user=user,
                        username=user.username,
                        decision=decision,
                        comment=comment,
                        plan_sha256=locked.plan_sha256,
                    )
            except IntegrityError:
                refusal = ("already_decided", "You already decided on these plans.")
        if refusal is None:
            _record_decision(locked, user, decision, comment)
    if refusal:
        refused(refusal)
    locked.refresh_from_db()
    return locked


def _record_decision(rollout: Rollout, user, decision: str, comment: str) -> None:
    details = {"comment": comment, "plan_sha256": rollout.plan_sha256}
    if decision == RolloutApproval.Decision.REJECT:
        rollout_move(
            rollout,
            R.REJECTED,
            event="rollout_rejected",
            user=user,
            details=details,
            fields={"finished_at": timezone.now()},
            notice="rollout_rejected",
            comment=comment,
        )
        return
    given = rollout.approvals_counted().count()
    rollout_audit(rollout, "rollout_approved", user=user, given=given, **details)
    notify.rollout_event(rollout, "rollout_approved", actor=user, comment=comment)
    if given >= rollout.required_approvals:
        rollout_move(
            rollout,
            R.RUNNING,
            event="rollout_started",
            user=user,
            fields={"started_at": timezone.now()},
        )


def rollout_pause(*, rollout: Rollout, user) -> Rollout:
    """Start no further target; the running ones finish."""
    _may_act(user, rollout, "pause")
    return rollout_move(
        rollout,
        R.PAUSED,
        event="rollout_paused",
        user=user,
        refusal="only a running rollout can be paused.",
    )


def rollout_resume(*, rollout: Rollout, user) -> Rollout:
    """Go on from where it paused or stopped (retry or skip the failed targets first: the
    failure policy is applied again)."""
    _may_act(user, rollout, "resume")
    return rollout_move(
        rollout,
        R.RUNNING,
        event="rollout_resumed",
        user=user,
        sources=(R.PAUSED, R.STOPPED),
        fields={"note": ""},
        refusal="only a paused or stopped rollout can be resumed.",
    )


def rollout_cancel(*, rollout: Rollout, user) -> Rollout:
    """End it: targets not started never will be, queued jobs are cancelled, running ones end."""
    _may_act(user, rollout, "cancel")
    with transaction.atomic():
        rollout = rollout_move(
            rollout,
            R.CANCELLED,
            event="rollout_cancelled",
            user=user,
            fields={"finished_at": timezone.now()},
            notice="rollout_finished",
            refusal="it has ended already.",
        )
        rollout.targets.filter(state__in=(T.WAITING, T.RECHECK)).update(
            state=T.CANCELLED,
            note=f"Cancelled with the rollout by {name_of(user)}.",
            updated_at=timezone.now(),
        )
    for job in Job.objects.filter(rollout=rollout, status=Job.Status.QUEUED).select_related(
        "environment__project"
    ):
        with contextlib.suppress(Refused):  # a worker took it meanwhile: it runs to its end
            move(
                job,
                Job.Status.CANCELLED,
                event="job_cancelled",
                user=user,
                sources=(Job.Status.QUEUED,),
                fields={"finished_at": timezone.now()},
                details={"rollout": rollout.pk},
            )
    return rollout


def rollout_retry_failed(*, rollout: Rollout, user) -> int:
    """Put the failed (and unplannable) targets back: each is read again and, when its plan is
    one the rollout was approved for, started again when its wave runs. Returns how many."""
    _may_act(user, rollout, "retry")
    if rollout.is_finished:
        raise Refused(
            f"Rollout #{rollout.pk} is {rollout.status}; nothing can be retried.", code="job_state"
        )
    with transaction.atomic():
        count = rollout.targets.filter(state__in=(T.FAILED, T.BLOCKED)).update(
            state=T.RECHECK, note=f"Retry asked by {name_of(user)}.", updated_at=timezone.now()
        )
        rollout_audit(rollout, "rollout_retry", user=user, targets=count)
    return count


def rollout_skip(*, rollout: Rollout, target: RolloutTarget, user) -> RolloutTarget:
    """Leave one target out: it will not be started (again)."""
    _may_act(user, rollout, "skip targets of")
    if target.rollout_id != rollout.pk:
        raise Refused("That environment is not a target of this rollout.")
    if target.state == T.RUNNING and target.job and target.job.status == Job.Status.QUEUED:
        with contextlib.suppress(Refused):
            move(
                target.job,
                Job.Status.CANCELLED,
                event="job_cancelled",
                user=user,
                sources=(Job.Status.QUEUED,),
                fields={"finished_at": timezone.now()},
            )
    with transaction.atomic():
        skippable = (T.WAITING, T.RECHECK, T.FAILED, T.BLOCKED, T.RUNNING)
        won = (
            RolloutTarget.objects.filter(pk=target.pk, state__in=skippable)
            .exclude(state=T.RUNNING, job__status=Job.Status.RUNNING)
            .update(state=T.SKIPPED, note=f"Skipped by {name_of(user)}.", updated_at=timezone.now())
        )
        target.refresh_from_db()
        if not won:
            raise Refused(
                f"{target.environment.name} is {target.state} in rollout #{rollout.pk}; it cannot "
                "be skipped now.",
                code="job_state",
            )
        rollout_audit(
            rollout, "rollout_target_skipped", user=user, environment=target.environment.name
        )
    return target


# what a person does to a rollout, by the name the page, the API and the CLI use
ACTIONS = {
    "submit": rollout_submit,
    "pause": rollout_pause,
    "resume": rollout_resume,
    "cancel": rollout_cancel,
    "retry": rollout_retry_failed,
}

__all__ = [
    "ACTIONS",
    "decision_refusal",
    "rollout_cancel",
    "rollout_decide",
    "rollout_pause",
    "rollout_resume",
    "rollout_retry_failed",
    "rollout_skip",
    "rollout_submit",
    "target_counts",
]
