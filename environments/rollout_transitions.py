"""A rollout's life: every change of a rollout's status is a call to `rollout_move`.

    planning ──▶ planned ──submit──▶ awaiting_approval ──approved──▶ running ──▶ completed
        │           │                   ├──reject──▶ rejected          │  ▲
        └──▶ failed │                   └──expire──▶ expired           │  └── resume ── paused
                    └──submit (no approval needed) ────────────────────┘  └── resume ── stopped
    cancel: from anything not finished (waiting targets are never started)

As for jobs (`transitions.py`), one change is one transaction: the conditional update (of two
requests racing, one wins), the audit event and the webhook message. A rollout moved to
`running` is handed to the coordinator once the transaction commits.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count

from environments import dispatch, notify
from environments.audit import audit_record
from environments.models import Rollout
from environments.transitions import Refused

R = Rollout.Status

SOURCES: dict[str, tuple[str, ...]] = {
    R.PLANNED: (R.PLANNING,),
    R.FAILED: (R.PLANNING,),
    R.AWAITING_APPROVAL: (R.PLANNED,),
    R.RUNNING: (R.PLANNED, R.AWAITING_APPROVAL, R.PAUSED, R.STOPPED),
    R.PAUSED: (R.RUNNING,),
    R.STOPPED: (R.RUNNING,),
    R.COMPLETED: (R.RUNNING,),
    R.CANCELLED: (R.PLANNING, R.PLANNED, R.AWAITING_APPROVAL, R.RUNNING, R.PAUSED, R.STOPPED),
    R.REJECTED: (R.AWAITING_APPROVAL,),
    R.EXPIRED: (R.AWAITING_APPROVAL,),
}


def rollout_move(
    rollout: Rollout,
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
) -> Rollout:
    """Move `rollout` to status `to` with the audit event `event`; refused (code
    "rollout_state") when it has moved on meanwhile. Returns the rollout as stored."""
    allowed = sources if sources is not None else SOURCES[to]
    assert set(allowed) <= set(SOURCES[to]), f"{allowed} cannot lead to {to}"
    with transaction.atomic():
        won = Rollout.objects.filter(pk=rollout.pk, status__in=allowed).update(
            status=to, **(fields or {})
        )
        rollout.refresh_from_db()
        if not won:
            raise Refused(f"Rollout #{rollout.pk} is {rollout.status}; {refusal}", code="job_state")
        rollout_audit(rollout, event, user=user, system_actor=system_actor, **(details or {}))
        if notice is not None:
            notify.rollout_event(rollout, notice, actor=user, comment=comment)
        if to == R.RUNNING:
            dispatch.send_on_commit("rollout_advance", rollout.pk)
    return rollout


def rollout_audit(rollout: Rollout, action: str, *, user=None, system_actor=None, **details):
    """An audit event about `rollout`: its id, status and target, and `details`."""
    audit_record(
        action=action,
        user=user,
        system_actor=system_actor,
        project=rollout.project,
        to_revisions=[rollout.target],
        details={"rollout": rollout.pk, "status": rollout.status} | details,
    )


def target_counts(rollout: Rollout) -> dict[str, int]:
    """How many of the rollout's targets are in each state."""
    rows = rollout.targets.values_list("state").annotate(n=Count("pk")).order_by()
    return {state: n for state, n in rows}
