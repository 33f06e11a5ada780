"""What a rollout's page shows, from the rows the coordinator stored (nothing here reads a
target): the waves as columns with their targets as tiles, the live counts, the time each wave
took, the first failure with its job and error line, and the plans an approver reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Max
from django.utils import timezone

from environments.models import Rollout, RolloutTarget, RolloutWave

T = RolloutTarget.State
TILES_PER_WAVE = 500  # beyond this a column says how many more (the counts stay exact)

# the four numbers at the top, and which target states each counts
COUNTED = {
    "done": (T.SUCCEEDED, T.UNCHANGED),
    "running": (T.RUNNING,),
    "failed": (T.FAILED, T.BLOCKED),
    "waiting": (T.WAITING, T.RECHECK),
}


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02} min"


@dataclass
class Column:
    wave: RolloutWave
    tiles: list[RolloutTarget] = field(default_factory=list)
    more: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> str:
        if self.wave.finished_at:
            return "finished"
        return "running" if self.wave.started_at else "waiting"

    @property
    def took(self) -> str:
        if not self.wave.started_at:
            return ""
        end = self.wave.finished_at or timezone.now()
        return duration((end - self.wave.started_at).total_seconds())


@dataclass
class Board:
    rollout: Rollout
    columns: list[Column]
    counts: dict[str, int]
    total: int
    failing: RolloutTarget | None
    plans: list[dict]
    took: str


def board_build(rollout: Rollout) -> Board:
    targets = (
        rollout.targets.select_related("environment", "job", "wave")
        .order_by("wave__number", "position")
        .only(
            "state",
            "note",
            "attempts",
            "plan",
            "wave__number",
            "environment__name",
            "environment__slug",
            "environment__project_id",
            "job__id",
            "job__status",
            "job__error",
        )
    )
    columns = {wave.pk: Column(wave) for wave in rollout.waves.order_by("number")}
    counts = dict.fromkeys(COUNTED, 0)
    failing, total = None, 0
    for target in targets.iterator(chunk_size=1000):
        total += 1
        column = columns[target.wave_id]
        column.counts[target.state] = column.counts.get(target.state, 0) + 1
        if len(column.tiles) < TILES_PER_WAVE:
            column.tiles.append(target)
        else:
            column.more += 1
        for name, states in COUNTED.items():
            if target.state in states:
                counts[name] += 1
        if failing is None and target.state == T.FAILED:
            failing = target
    plans = [
        plan | {"number": number, "to": plan["to_heads"], "first": plan["revisions"][:1]}
        for number, plan in enumerate(rollout.plans, start=1)
    ]
    took = ""
    if rollout.started_at:
        took = duration(
            ((rollout.finished_at or timezone.now()) - rollout.started_at).total_seconds()
        )
    return Board(rollout, list(columns.values()), counts, total, failing, plans, took)


def board_key(rollout: Rollout) -> tuple:
    """What the live region shows, as parts of a fingerprint: the rollout's row, the newest
    change of a target, the waves' times, the decisions, and a minute's bucket (durations)."""
    newest = rollout.targets.aggregate(at=Max("updated_at"), n=Max("attempts"))
    waves = list(rollout.waves.values_list("started_at", "finished_at"))
    decisions = rollout.approvals.aggregate(newest=Max("id"))["newest"]
    jobs = rollout.jobs.aggregate(started=Max("started_at"), ended=Max("finished_at"))
    minute = (
        int(timezone.now().timestamp() // 60) if rollout.status == Rollout.Status.RUNNING else 0
    )
    return (
        rollout.status,
        rollout.note,
        rollout.plan_sha256,
        newest["at"],
        newest["n"],
        waves,
        decisions,
        jobs["started"],
        jobs["ended"],
        minute,
    )


def _iso(moment) -> str | None:
    return moment.isoformat() if moment else None


def rollout_json(rollout: Rollout) -> dict:
    """A rollout as the API and `manage.py rollout --json` give it."""
    board = board_build(rollout)
    targets = rollout.targets.select_related("environment", "wave").order_by(
        "wave__number", "position"
    )
    return {
        "id": rollout.pk,
        "url": rollout.get_absolute_url(),
        "project": rollout.project.slug,
        "target": rollout.target,
        "labels": rollout.labels,
        "status": rollout.status,
        "note": rollout.note or None,
        "on_failure": rollout.failure_policy,
        "plan_sha256": rollout.plan_sha256 or None,
        "plans": [
            {
                key: plan.get(key)
                for key in (
                    "from_heads",
                    "to_heads",
                    "revisions",
                    "dialect",
                    "targets",
                    "sql_sha256",
                )
            }
            for plan in rollout.plans
        ],
        "approvals": {
            "required": rollout.required_approvals,
            "given": rollout.approvals_counted().count(),
        },
        "counts": board.counts | {"total": board.total},
        "waves": [
            {
                "number": column.wave.number,
                "name": column.wave.name,
                "chooses": column.wave.spec,
                "parallel": column.wave.parallel,
                "started_at": _iso(column.wave.started_at),
                "finished_at": _iso(column.wave.finished_at),
                "targets": column.counts,
            }
            for column in board.columns
        ],
        "targets": [
            {
                "environment": target.environment.slug,
                "wave": target.wave.number,
                "state": target.state,
                "job": target.job_id,
                "attempts": target.attempts,
                "note": target.note or None,
            }
            for target in targets
        ],
        "requested_by": rollout.requested_by.username if rollout.requested_by else None,
        "created_at": _iso(rollout.created_at),
        "started_at": _iso(rollout.started_at),
        "finished_at": _iso(rollout.finished_at),
    }
