"""Planning a rollout: what a person asks for (a target, a selection, waves, a failure policy),
checked and saved at once, then worked out by a worker: every selected environment is read, its
plan made statically from the scripts, the targets grouped into the distinct plans (from-heads →
target, the revisions, the files' digest, the dialect) and each plan's SQL rendered once with
`alembic --sql` on one of its targets. The set of plans, with how many targets each, is what an
approval binds to (`plan_sha256`)."""

from __future__ import annotations

import hashlib
import json

from django.db import transaction
from django.utils import timezone

from environments import dispatch, risks, roles
from environments.core import plan as core_plan
from environments.core.backups import dialect_of
from environments.core.backups.common import BackupError
from environments.models import (
    Environment,
    Job,
    Project,
    Rollout,
    RolloutTarget,
    RolloutWave,
    UrlUnavailable,
)
from environments.planning import scripts_digest, sql_digest, sql_render
from environments.reads import environments_read
from environments.rollout_specs import WaveSpec, failure_parse
from environments.rollout_transitions import rollout_audit, rollout_move, target_counts
from environments.rollouts import rollout_submit
from environments.transitions import Refused, name_of, refuse

T = RolloutTarget.State
MAX_WAVES = 20


def rollout_request(
    *,
    project: Project,
    target: str,
    user,
    labels: dict[str, str] | None = None,
    waves: list[WaveSpec] | None = None,
    on_failure: str = "stop",
    take_backup: bool | None = None,
    reason: str = "",
    start: bool = False,
) -> Rollout:
    """Save a rollout to plan; a worker reads its targets and works the plans out (and, with
    `start`, submits it as `user` once they are)."""
    if not roles.may_request(user, project):
        refuse(
            "not_requester",
            f"{name_of(user)} may not plan rollouts in {project.name}: that needs the developer "
            "or release manager role.",
            user=user,
            action="rollout_refused",
        )
    target = (target or "").strip()
    if not target:
        raise Refused("Name the target: heads, a revision, or label@head.")
    waves = waves or [WaveSpec(name="all", labels={})]
    if len(waves) > MAX_WAVES:
        raise Refused(f"A rollout has {MAX_WAVES} waves at most.")
    policy, threshold = failure_parse(on_failure)
    with transaction.atomic():
        rollout = Rollout.objects.create(
            project=project,
            target=target[:200],
            labels=dict(labels or {}),
            on_failure=policy,
            failure_threshold=threshold,
            take_backup=take_backup,
            start_when_planned=start,
            requested_by=user if getattr(user, "is_authenticated", False) else None,
            reason=reason,
        )
        for number, spec in enumerate(waves, start=1):
            RolloutWave.objects.create(
                rollout=rollout,
                number=number,
                name=spec.name,
                labels=spec.labels,
                count=spec.count,
                parallel=spec.parallel,
            )
        rollout_audit(rollout, "rollout_requested", user=user)
        dispatch.send_on_commit("rollout_plan", rollout.pk)
    return rollout


def carries(environment: Environment, labels: dict[str, str]) -> bool:
    """Whether `environment` has every one of `labels`."""
    own = environment.labels or {}
    return all(own.get(key) == value for key, value in labels.items())


def selected(rollout: Rollout) -> list[Environment]:
    """The project's present environments that carry every label of the selection."""
    environments = rollout.project.environments.filter(gone_at=None).select_related("project")
    return [e for e in environments.order_by("position", "name") if carries(e, rollout.labels)]


def plan_key(fields: dict) -> str:
    """What makes two targets' plans the same plan."""
    return json.dumps(
        [
            sorted(fields["from_heads"]),
            sorted(fields["to_heads"]),
            list(fields["revisions"]),
            fields["scripts_sha256"],
            fields["dialect"],
        ]
    )


def rollout_plan(*, rollout_id: int) -> Rollout | None:
    """On a worker: read every selected environment, plan each, group the plans, render each
    plan's SQL once, assign the targets to waves, and leave the rollout planned."""
    rollout = Rollout.objects.select_related("project").filter(pk=rollout_id).first()
    if rollout is None or rollout.status != Rollout.Status.PLANNING:
        return rollout
    environments = selected(rollout)
    index, error = rollout.project.load_scripts()
    if index is None or not environments:
        why = (
            f"The scripts cannot be read: {error}"
            if index is None
            else f"No environment of {rollout.project.name} has the labels {rollout.selection}."
        )
        return _planned(rollout, Rollout.Status.FAILED, note=why)
    states = environments_read(environments=environments)
    plans: dict[str, dict] = {}
    rows = []
    for environment in environments:
        state = states.get(environment.pk)
        fields, why = target_plan(rollout, environment, state, index)
        if fields is None:
            rows.append((environment, -1, {}, why[0], why[1]))
            continue
        key = plan_key(fields)
        entry = plans.setdefault(key, fields | {"targets": 0, "example": environment.pk})
        entry["targets"] += 1
        rows.append((environment, list(plans).index(key), fields, T.WAITING, ""))
    ordered = list(plans.values())
    for entry in ordered:
        entry["findings"] = risks.file_risks(index, entry["revisions"], Job.Kind.UPGRADE)
        _render_sql(entry, rollout)
    _assign(rollout, rows)
    targets = [environment for environment, *_ in rows]
    return _planned(
        rollout,
        Rollout.Status.PLANNED,
        plans=ordered,
        required_approvals=max(e.required_approvals for e in targets),
        requester_may_approve=all(e.requester_may_approve for e in targets),
    )


def target_plan(rollout, environment, state, index) -> tuple[dict | None, tuple[str, str]]:
    """The plan of one target, or None and (its state, why) when it has none to run."""
    if state is None or state.is_read_failure:
        return None, (T.BLOCKED, f"Cannot be read: {state.error if state else 'not read'}")
    if state.unknown:
        return None, (
            T.BLOCKED,
            f"Holds revisions the scripts do not know: {', '.join(state.unknown)}.",
        )
    try:
        dialect = dialect_of(environment.get_url())
        planned = core_plan.plan_job(index, "upgrade", rollout.target, state.heads)
    except (UrlUnavailable, BackupError) as exc:
        return None, (T.BLOCKED, str(exc))
    except core_plan.PlanError as exc:
        return None, (T.BLOCKED, str(exc))
    if planned.changes_nothing:
        return None, (T.UNCHANGED, f"Already holds {', '.join(state.heads)}.")
    return {
        "from_heads": sorted(state.heads),
        "to_heads": sorted(planned.to_heads),
        "revisions": list(planned.revisions),
        "scripts_sha256": scripts_digest(index, list(planned.revisions)),
        "dialect": dialect,
    }, ("", "")


def _render_sql(entry: dict, rollout: Rollout) -> None:
    """The plan's SQL, rendered offline on one of its targets (a schema tenant's names its
    schema: every other target runs the same revisions in its own)."""
    environment = Environment.objects.select_related("project").get(pk=entry["example"])
    job = Job(
        environment=environment,
        kind=Job.Kind.UPGRADE,
        target=rollout.target,
        from_heads=entry["from_heads"],
        to_heads=entry["to_heads"],
    )
    entry["example"] = environment.name
    entry["sql"], entry["sql_note"] = sql_render(job)
    entry["sql_sha256"] = sql_digest(entry["sql"])


def _assign(rollout: Rollout, rows: list) -> None:
    """Each target to the first wave whose labels it has and whose count is not yet reached
    (a target with nothing to run goes to the first such wave without a count); the ones no
    wave takes form a last wave, "the rest"."""
    waves = list(rollout.waves.order_by("number"))
    taken = {wave.pk: 0 for wave in waves}
    made = []
    rest = None
    for position, (environment, plan, fields, state, note) in enumerate(rows):
        # a target with nothing to run takes no counted place: it joins an uncounted wave
        wave = next(
            (
                wave
                for wave in waves
                if carries(environment, wave.labels)
                and (
                    wave.count is None
                    if plan < 0
                    else (wave.count is None or taken[wave.pk] < wave.count)
                )
            ),
            None,
        )
        if wave is None:
            if rest is None:
                rest = RolloutWave.objects.create(
                    rollout=rollout,
                    number=len(waves) + 1,
                    name="the rest",
                    parallel=waves[-1].parallel,
                )
                taken[rest.pk] = 0
            wave = rest
        if plan >= 0:
            taken[wave.pk] += 1
        made.append(
            RolloutTarget(
                rollout=rollout,
                wave=wave,
                environment=environment,
                position=position,
                plan=plan,
                from_heads=fields.get("from_heads", []),
                revisions=fields.get("revisions", []),
                scripts_sha256=fields.get("scripts_sha256", ""),
                state=state,
                note=note,
            )
        )
    RolloutTarget.objects.bulk_create(made, batch_size=500)


def plan_sha256(rollout: Rollout) -> str:
    """What an approval binds to: the target, the plans with their SQL and how many targets
    each, which environment runs which plan in which wave, the waves and the policy."""
    content = {
        "project": rollout.project_id,
        "target": rollout.target,
        "plans": [
            {key: plan[key] for key in plan if key not in ("sql", "sql_note", "example")}
            for plan in rollout.plans
        ],
        "targets": list(
            rollout.targets.order_by("environment_id").values_list(
                "environment_id", "plan", "wave__number"
            )
        ),
        "waves": list(rollout.waves.order_by("number").values_list("number", "parallel")),
        "on_failure": [rollout.on_failure, rollout.failure_threshold],
        "take_backup": rollout.take_backup,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _planned(rollout: Rollout, status: str, *, note: str = "", **fields) -> Rollout:
    with transaction.atomic():
        for key, value in fields.items():
            setattr(rollout, key, value)
        rollout.note = note
        rollout.planned_at = timezone.now()
        rollout.save()
        details = {"plans": len(rollout.plans), "note": note}
        if status == Rollout.Status.PLANNED:
            rollout.plan_sha256 = plan_sha256(rollout)
            Rollout.objects.filter(pk=rollout.pk).update(plan_sha256=rollout.plan_sha256)
            details |= target_counts(rollout)
        rollout = rollout_move(
            rollout,
            status,
            event="rollout_planned" if status == Rollout.Status.PLANNED else "rollout_failed",
            system_actor="worker",
            details=details,
        )
    if status == Rollout.Status.PLANNED and rollout.start_when_planned and rollout.requested_by:
        try:
            rollout = rollout_submit(rollout=rollout, user=rollout.requested_by)
        except Refused as exc:
            Rollout.objects.filter(pk=rollout.pk).update(note=f"Not started: {exc}")
            rollout.refresh_from_db()
    return rollout


def approved_plan(rollout: Rollout, fields: dict, index) -> int:
    """Which of the rollout's plans covers a target's plan `fields`: the same plan, or the end
    of one (a target whose run committed its first revisions, then stopped: SQLite commits each
    revision on its own) whose files are still those approved. -1 when none does."""
    key = plan_key(fields)
    revisions = list(fields["revisions"])
    for number, plan in enumerate(rollout.plans):
        if plan_key(plan) == key:
            return number
        tail = plan["revisions"][-len(revisions) :] if revisions else None
        if (
            tail == revisions
            and sorted(plan["to_heads"]) == sorted(fields["to_heads"])
            and plan["dialect"] == fields["dialect"]
            and index is not None
            and scripts_digest(index, plan["revisions"]) == plan["scripts_sha256"]
        ):
            return number
    return -1


def plan_of(job: Job, index) -> dict | None:
    """The approved plan a rollout's job runs (or the end of), None when it is not among them;
    `index`: the project's scripts as they are now."""
    rollout = job.rollout
    try:
        dialect = dialect_of(job.environment.get_url())
    except (UrlUnavailable, BackupError):
        return None
    fields = {
        "from_heads": job.from_heads,
        "to_heads": job.to_heads,
        "revisions": job.revisions,
        "scripts_sha256": job.scripts_sha256,
        "dialect": dialect,
    }
    number = approved_plan(rollout, fields, index)
    return rollout.plans[number] if number >= 0 else None


def rollout_refusal(job: Job, index) -> str | None:
    """Why a rollout's job may not run (its rollout lacks approvals, or the job's plan is not
    one of those approved, judged with the scripts' `index`), in a sentence; None when it may."""
    rollout = job.rollout
    missing = rollout.approvals_missing()
    if missing:
        return (
            f"Rollout #{rollout.pk} needs {rollout.required_approvals} approval"
            f"{'s' if rollout.required_approvals != 1 else ''} of its plans and {missing} "
            f"{'is' if missing == 1 else 'are'} missing; nothing was changed."
        )
    if rollout.status not in (
        Rollout.Status.RUNNING,
        Rollout.Status.PAUSED,
        Rollout.Status.STOPPED,
    ):
        return f"Rollout #{rollout.pk} is {rollout.status}; nothing was changed."
    if plan_of(job, index) is None:
        return (
            f"This plan is not one of those rollout #{rollout.pk} was approved for; nothing was "
            "changed."
        )
    return None
