"""The coordinator: moves a running rollout on, from what the database says and nothing else.

It runs on a worker whenever one of the rollout's jobs ends, when a rollout starts or resumes,
and on beat's tick, so a coordinator killed anywhere is replaced by the next call. Each call:

1. brings the targets in line with their jobs (succeeded, failed; interrupted: read again);
2. reads the targets marked for a fresh read (an interrupted job, a retry): one that now holds
   the target is done, one whose plan is still among the approved ones waits to start again,
   any other has failed (its new plan was never approved);
3. under a lock on the rollout's row: applies the failure policy (stopped, with the first
   failure named), finishes the waves whose targets all ended, ends the rollout after the
   last, holds a wave while the promotion rule says its targets may not move yet, and starts
   waiting targets of the current wave up to its parallelism, each as an ordinary job.

A target is started only by a conditional update inside that lock, and a job is queued once
(`transitions.move`); so no target runs twice, however many coordinators run.
"""

from __future__ import annotations

import contextlib
import logging

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from environments import dispatch, notify
from environments.models import Environment, Job, Rollout, RolloutTarget, RolloutWave
from environments.promotion import promotion_verdict
from environments.reads import environments_read
from environments.rollout_plans import approved_plan, target_plan
from environments.rollout_transitions import rollout_audit, rollout_move, target_counts
from environments.transitions import Refused, job_audit, move

logger = logging.getLogger(__name__)

R = Rollout.Status
T = RolloutTarget.State
RUNS = (R.RUNNING, R.PAUSED, R.STOPPED, R.CANCELLED, R.COMPLETED)


def rollout_advance(*, rollout_id: int) -> Rollout | None:
    """One step of the coordinator for one rollout (see the module's doc)."""
    rollout = Rollout.objects.select_related("project").filter(pk=rollout_id).first()
    if rollout is None or rollout.status not in RUNS:
        return rollout
    _sync(rollout)
    if rollout.status == R.RUNNING:
        _recheck(rollout)
        with transaction.atomic():
            locked = Rollout.objects.select_for_update().select_related("project")
            locked = locked.get(pk=rollout.pk)
            if locked.status == R.RUNNING:
                _step(locked)
    Rollout.objects.filter(pk=rollout.pk).update(advanced_at=timezone.now())
    rollout.refresh_from_db()
    return rollout


def rollout_advance_now(rollout_id: int) -> None:
    """A step at once, on the worker whose job just ended (its next targets are queued before
    its task returns); should the step fail there, a message asks any worker for it."""
    try:
        rollout_advance(rollout_id=rollout_id)
    except Exception:  # noqa: BLE001 - the job has ended either way; the step is retried
        logger.exception(
            "rollout #%s: step failed after a job ended; sent to the workers", rollout_id
        )
        dispatch.send("rollout_advance", rollout_id)


def rollouts_advance(*, now=None) -> int:
    """Beat's tick: every rollout with something to do, and expired requests."""
    now = now or timezone.now()
    for rollout in Rollout.objects.filter(status=R.AWAITING_APPROVAL, expires_at__lte=now):
        with contextlib.suppress(Refused):  # decided meanwhile
            rollout_move(
                rollout,
                R.EXPIRED,
                event="rollout_expired",
                system_actor="expiry",
                fields={"finished_at": now},
                notice="rollout_finished",
            )
    busy = Rollout.objects.filter(
        Q(status=R.RUNNING) | Q(status__in=RUNS, targets__state=T.RUNNING)
    ).distinct()
    count = 0
    for rollout_id in busy.values_list("pk", flat=True):
        rollout_advance(rollout_id=rollout_id)
        count += 1
    return count


# --- 1. targets in line with their jobs ----------------------------------------------------


def _sync(rollout: Rollout) -> None:
    running = rollout.targets.filter(state=T.RUNNING, job__status__in=Job.FINISHED)
    for target in running.select_related("job"):
        job = target.job
        if job.status == Job.Status.SUCCEEDED:
            state, note = T.SUCCEEDED, ""
        elif job.status == Job.Status.INTERRUPTED:
            state = T.RECHECK
            note = (
                f"Job #{job.pk} was interrupted (its worker stopped); read again before going on."
            )
        else:
            state = T.FAILED
            note = (job.error or f"Job #{job.pk} {job.status}.").strip().splitlines()[0][:1000]
        RolloutTarget.objects.filter(pk=target.pk, state=T.RUNNING, job=job).update(
            state=state, note=note, updated_at=timezone.now()
        )


# --- 2. a fresh read before a target starts again ------------------------------------------


def _recheck(rollout: Rollout) -> None:
    targets = list(
        rollout.targets.filter(state=T.RECHECK).select_related("environment__project", "job")
    )
    if not targets:
        return
    index, error = rollout.project.load_scripts()
    states = environments_read(environments=[target.environment for target in targets])
    for target in targets:
        environment = target.environment
        state = states.get(environment.pk)
        plan, plan_state, note = -1, T.FAILED, f"The scripts cannot be read: {error}"
        if index is not None:
            fields, (why_state, why) = target_plan(rollout, environment, state, index)
            if fields is None and why_state == T.UNCHANGED:
                plan_state = T.SUCCEEDED if target.job_id else T.UNCHANGED
                note = (
                    f"Holds the target: job #{target.job_id} had committed before its worker "
                    "stopped."
                    if target.job_id
                    else why
                )
            elif fields is None:
                plan_state, note = (T.FAILED if target.job_id else T.BLOCKED), why
            elif (number := approved_plan(rollout, fields, index)) >= 0:
                plan, plan_state, note = number, T.WAITING, ""
            else:
                note = (
                    f"Now holds {', '.join(fields['from_heads']) or 'nothing'}: no plan the "
                    "rollout was approved for starts there. Plan a new rollout for it."
                )
        changes = {"state": plan_state, "note": note, "updated_at": timezone.now()}
        if plan >= 0:
            changes |= {key: fields[key] for key in ("from_heads", "revisions", "scripts_sha256")}
            changes["plan"] = plan
        RolloutTarget.objects.filter(pk=target.pk, state=T.RECHECK).update(**changes)


# --- 3. the step, under the rollout's lock -------------------------------------------------


def _step(rollout: Rollout) -> None:
    """Counted in the database, so a step costs the same at 20 targets as at 10,000: only the
    targets it starts (at most a wave's parallelism) are loaded."""
    targets = rollout.targets.select_related("environment__project", "wave")
    if _stopped_by_policy(rollout, targets):
        return
    waves = list(rollout.waves.order_by("number"))
    still_open = set(
        targets.filter(state__in=RolloutTarget.OPEN).values_list("wave_id", flat=True).distinct()
    )
    for wave in waves:
        if wave.started_at and not wave.finished_at and wave.pk not in still_open:
            _wave_finished(rollout, wave)
    current = next((wave for wave in waves if wave.pk in still_open), None)
    if current is None:
        _completed(rollout)
        return
    mine = targets.filter(wave=current)
    if current.started_at is None:
        waits = _promotion_hold(rollout, mine)
        if waits:
            if rollout.note != waits:
                Rollout.objects.filter(pk=rollout.pk).update(note=waits)
            return
        current.started_at = timezone.now()
        current.save(update_fields=["started_at"])
        rollout_audit(
            rollout, "rollout_wave_started", system_actor="coordinator", wave=current.number
        )
    if rollout.note:
        Rollout.objects.filter(pk=rollout.pk).update(note="")
    slots = current.parallel - mine.filter(state=T.RUNNING).count()
    if slots > 0:
        for target in mine.filter(state=T.WAITING).order_by("position")[:slots]:
            _start(rollout, current, target)


def _stopped_by_policy(rollout: Rollout, targets) -> bool:
    failed = targets.filter(state=T.FAILED).order_by("wave__number", "position")
    count = failed.count()
    allowed = rollout.failures_allowed(targets.exclude(plan=-1).count())
    if allowed is None or count <= allowed:
        return False
    first = failed.first()
    note = (
        f"Stopped in wave {first.wave.number} ({first.wave.name}): {count} target"
        f"{'s' if count != 1 else ''} failed, {first.environment.name} first"
        f"{f' (job #{first.job_id})' if first.job_id else ''}: {first.note} The policy: "
        f"{rollout.failure_policy}. Fix it, then retry the failed targets and resume."
    )
    rollout_move(
        rollout,
        R.STOPPED,
        event="rollout_stopped",
        system_actor="coordinator",
        details={"failed": count, "allowed": allowed},
        fields={"note": note},
        notice="rollout_stopped",
    )
    return True


def _wave_finished(rollout: Rollout, wave: RolloutWave) -> None:
    wave.finished_at = timezone.now()
    wave.save(update_fields=["finished_at"])
    rows = wave.targets.values_list("state").annotate(n=Count("pk")).order_by()
    counts = {state: n for state, n in rows}
    rollout_audit(
        rollout, "rollout_wave_finished", system_actor="coordinator", wave=wave.number, **counts
    )
    notify.rollout_event(rollout, "rollout_wave_finished", wave=wave, counts=counts)


def _completed(rollout: Rollout) -> None:
    counts = target_counts(rollout)
    done = sum(counts.get(state, 0) for state in RolloutTarget.DONE)
    parts = [f"{done} of {sum(counts.values())} hold the target"]
    parts += [
        f"{counts[state]} {state}"
        for state in (T.FAILED, T.BLOCKED, T.SKIPPED)
        if counts.get(state)
    ]
    rollout_move(
        rollout,
        R.COMPLETED,
        event="rollout_completed",
        system_actor="coordinator",
        details=counts,
        fields={"finished_at": timezone.now(), "note": "; ".join(parts) + "."},
        notice="rollout_finished",
    )


def _promotion_hold(rollout: Rollout, mine) -> str:
    """Why the wave may not start yet under its targets' promotion rule ("" when it may)."""
    ruled = mine.filter(state=T.WAITING, environment__promotion_from__isnull=False)
    for target in ruled.order_by("position"):
        plan = rollout.plans[target.plan]
        probe = Job(
            environment=target.environment, kind=Job.Kind.UPGRADE, to_heads=plan["to_heads"]
        )
        verdict = promotion_verdict(probe)
        if not verdict.ok:
            return f"Wave {target.wave.number} ({target.wave.name}) waits: {verdict.text}"
    return ""


def _start(rollout: Rollout, wave: RolloutWave, target: RolloutTarget) -> None:
    """Plan the target's job from its approved plan and queue it (the worker checks the
    database still holds the plan's from-heads before it changes anything)."""
    environment: Environment = target.environment
    plan = rollout.plans[target.plan]
    backup = environment.backup_before_jobs if rollout.take_backup is None else rollout.take_backup
    job = Job.objects.create(
        environment=environment,
        kind=Job.Kind.UPGRADE,
        target=rollout.target,
        from_heads=list(target.from_heads),
        to_heads=plan["to_heads"],
        revisions=list(target.revisions),
        findings=[f for f in plan.get("findings", []) if f.get("revision") in target.revisions],
        scripts_sha256=target.scripts_sha256,
        sql_status=Job.Preview.NOT_NEEDED,
        sql_note=(
            f"Approved with rollout #{rollout.pk}, plan {target.plan + 1} of "
            f"{len(rollout.plans)} (its SQL is on the rollout's page)."
        ),
        take_backup=backup or environment.backup_required,
        requested_by=rollout.requested_by,
        reason=f"Rollout #{rollout.pk}, wave {wave.number} ({wave.name}).",
        rollout=rollout,
    )
    details = {"rollout": rollout.pk, "wave": wave.number}
    job_audit(job, "job_planned", system_actor="rollout", details=details)
    try:
        move(
            job,
            Job.Status.QUEUED,
            event="job_queued",
            system_actor="rollout",
            details=details,
            fields={"queued_at": timezone.now()},
        )
    except Refused as exc:  # another job holds the environment: try again on the next step
        move(
            job,
            Job.Status.CANCELLED,
            event="job_discarded",
            system_actor="rollout",
            sources=(Job.Status.PLANNED,),
            details=details | {"reason": str(exc)},
            fields={"finished_at": timezone.now()},
        )
        RolloutTarget.objects.filter(pk=target.pk).update(note=str(exc))
        return
    RolloutTarget.objects.filter(pk=target.pk, state=T.WAITING).update(
        state=T.RUNNING,
        job=job,
        attempts=target.attempts + 1,
        note="",
        updated_at=timezone.now(),
    )
