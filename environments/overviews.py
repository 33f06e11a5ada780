"""What the overview and an environment's page show, built from the scripts and the reads:
each environment's card, a project's overview (with its heads verdict), an environment's
pending and applied revisions and its recent reads (runs of identical ones folded)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from environments.core.heads import HeadsVerdict
from environments.core.revision_files import ScriptProblem
from environments.core.scripts import ScriptIndex
from environments.models import DriftState, Environment, Project, Snapshot
from environments.reads import Indexes, environment_read, environments_read


@dataclass
class RevisionLine:
    revision: str
    message: str
    known: bool = True


@dataclass
class EnvironmentCard:
    environment: Environment
    snapshot: Snapshot | None
    heads: list[RevisionLine] = field(default_factory=list)
    drift: list[dict] = field(default_factory=list)  # the last scheduled drift check's


@dataclass
class ProjectOverview:
    project: Project
    index: ScriptIndex | None
    index_error: str | None
    cards: list[EnvironmentCard]

    @property
    def problems(self) -> list[ScriptProblem]:
        return self.index.problems if self.index else []

    @property
    def multiple_heads(self) -> tuple[str, ...]:
        return self.index.heads if self.index and self.index.has_multiple_heads else ()

    @property
    def heads(self) -> HeadsVerdict | None:
        """Whether the scripts' heads are as the project intends; None when unreadable."""
        if self.index is None or self.index.revision_map is None:
            return None
        return self.project.heads_verdict(self.index)

    def heads_dict(self) -> dict[str, object]:
        """The heads verdict as the CI gate and the status API print it."""
        verdict = self.heads
        return {
            "multiple_heads": bool(self.multiple_heads),
            "heads_expected": verdict.expected if verdict else None,
            "heads_reason": verdict.sentence if verdict else "",
        }

    @property
    def fatal(self) -> str | None:
        return self.index_error or (self.index.fatal if self.index else None)


def _card(
    environment: Environment,
    snapshot: Snapshot | None,
    index: ScriptIndex | None,
    drift: DriftState | None = None,
):
    heads = []
    if snapshot is not None:
        for head in snapshot.heads:
            revision = index.revisions.get(head) if index else None
            heads.append(
                RevisionLine(head, revision.message if revision else "", revision is not None)
            )
    found = drift.involving(environment.slug) if drift is not None else []
    return EnvironmentCard(environment=environment, snapshot=snapshot, heads=heads, drift=found)


def overview_build(*, projects: Iterable[Project], refresh: bool = True) -> list[ProjectOverview]:
    """Every project with its environments in promotion order, read now (or as last read)."""
    projects = list(projects)
    environments = [env for project in projects for env in project.environments.all()]
    indexes: Indexes = {project.pk: project.load_scripts() for project in projects}
    if refresh:
        snapshots = environments_read(environments=environments, indexes=indexes)
    else:
        snapshots = Snapshot.objects.latest_of(environments)
    drift = {d.project_id: d for d in DriftState.objects.filter(project__in=projects)}
    overviews = []
    for project in projects:
        index, error = indexes[project.pk]
        state = drift.get(project.pk)
        cards = [
            _card(env, snapshots.get(env.pk), index, state) for env in project.environments.all()
        ]
        overviews.append(ProjectOverview(project, index, error, cards))
    return overviews


def environment_card(*, environment: Environment, refresh: bool) -> EnvironmentCard:
    snapshot = (
        environment_read(environment=environment) if refresh else environment.latest_snapshot()
    )
    index, _ = environment.project.load_scripts()
    drift = DriftState.objects.filter(project=environment.project_id).first()
    return _card(environment, snapshot, index, drift)


@dataclass
class RevisionRow:
    revision: str
    message: str
    create_date: str | None
    branch_labels: tuple[str, ...]
    down_revisions: tuple[str, ...]
    filename: str

    @property
    def is_merge(self) -> bool:
        return len(self.down_revisions) > 1


@dataclass
class ReadRun:
    """Consecutive reads that found the same thing, shown as one row: the newest of them, how
    many there were and when the first was."""

    latest: Snapshot
    count: int = 1
    since: datetime | None = None  # the oldest read's checked_at

    def same_as(self, snapshot: Snapshot) -> bool:
        latest = self.latest
        return (
            snapshot.status == latest.status
            and list(snapshot.heads) == list(latest.heads)
            and len(snapshot.pending) == len(latest.pending)
            and snapshot.error == latest.error
        )


def read_runs(snapshots: Iterable[Snapshot], *, limit: int = 20) -> list[ReadRun]:
    """Snapshots, newest first, with each run of identical reads folded into one row."""
    runs: list[ReadRun] = []
    for snapshot in snapshots:
        if runs and runs[-1].same_as(snapshot):
            runs[-1].count += 1
            runs[-1].since = snapshot.checked_at
            continue
        if len(runs) == limit:
            break
        runs.append(ReadRun(snapshot, 1, snapshot.checked_at))
    return runs


@dataclass
class EnvironmentDetail:
    pending: list[RevisionRow]
    applied: list[RevisionRow]
    recent: list[ReadRun]
    index_error: str | None
    problems: list[ScriptProblem]
    index: ScriptIndex | None = None  # what the page read the scripts as, for its job form


def _rows(index: ScriptIndex, ids: Iterable[str]) -> list[RevisionRow]:
    rows = []
    for revision_id in ids:
        revision = index.revisions.get(revision_id)
        if revision is not None:
            rows.append(
                RevisionRow(
                    revision=revision.revision,
                    message=revision.message,
                    create_date=revision.create_date,
                    branch_labels=revision.branch_labels,
                    down_revisions=revision.down_revisions,
                    filename=revision.path.name,
                )
            )
    return rows


def environment_detail_build(*, card: EnvironmentCard) -> EnvironmentDetail:
    """Pending revisions in apply order and the applied history, newest first."""
    environment, snapshot = card.environment, card.snapshot
    index, error = environment.project.load_scripts()
    pending: list[RevisionRow] = []
    applied: list[RevisionRow] = []
    if index is not None and index.revision_map is not None and snapshot is not None:
        pending = _rows(index, snapshot.pending)
        known_heads = [head for head in snapshot.heads if index.knows(head)]
        if not snapshot.unknown and known_heads:
            applied = _rows(index, index.applied(known_heads))
    recent = read_runs(environment.snapshots.order_by("-checked_at", "-id")[:500])
    return EnvironmentDetail(
        pending=pending,
        applied=applied,
        recent=recent,
        index_error=error or (index.fatal if index else None),
        problems=index.problems if index else [],
        index=index,
    )
