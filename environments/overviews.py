"""What the overview and an environment's page show, built from the scripts and the stored
states: each environment's card, a project's overview (with its heads verdict), an
environment's pending and applied revisions and its history (the changes its reads found)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db.models import Prefetch

from dashboard.lib import live
from environments.core.heads import HeadsVerdict
from environments.core.revision_files import ScriptProblem
from environments.models import CurrentState, DriftState, Environment, Project, StateChange
from environments.reads import Indexes, environment_read, environments_read

if TYPE_CHECKING:
    from environments.core.scripts import ScriptIndex

HISTORY_SHOWN = 50  # changes on an environment's page


@dataclass
class RevisionLine:
    revision: str
    message: str
    known: bool = True


@dataclass
class EnvironmentCard:
    environment: Environment
    state: CurrentState | None  # None: never read
    heads: list[RevisionLine] = field(default_factory=list)
    drift: list[dict] = field(default_factory=list)  # the last scheduled drift check's
    row: CurrentState | None = None  # the state's row, read or not: a read may be under way

    @property
    def status(self) -> str:
        """The stored read's status; "not_read" for an environment none was stored for, "gone"
        for a tenant its server no longer lists."""
        if self.environment.gone_at is not None:
            return "gone"
        return self.state.status if self.state is not None else "not_read"

    @property
    def reading(self) -> bool:
        return self.row is not None and self.row.reading

    @property
    def live_key(self) -> str:
        """The card's fingerprint while a read is under way (see dashboard/lib/live.py)."""
        row = self.row
        return live.fingerprint(row and row.checked_at, row and row.requested_at, self.reading)

    @property
    def read_gave_up(self) -> bool:
        return self.row is not None and self.row.read_gave_up


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
        return heads_dict(self.heads)

    @property
    def fatal(self) -> str | None:
        return self.index_error or (self.index.fatal if self.index else None)


def heads_dict(verdict: HeadsVerdict | None) -> dict[str, object]:
    """A project's heads verdict (None: the scripts could not be read) as the CI gate and the
    status API print it."""
    return {
        "multiple_heads": bool(verdict and verdict.several),
        "heads_expected": verdict.expected if verdict else None,
        "heads_reason": verdict.sentence if verdict else "",
    }


def _card(
    environment: Environment,
    row: CurrentState | None,
    index: ScriptIndex | None,
    drift: DriftState | None = None,
):
    state = row if row is not None and row.checked_at is not None else None
    heads = []
    if state is not None:
        for head in state.heads:
            revision = index.revisions.get(head) if index else None
            heads.append(
                RevisionLine(head, revision.message if revision else "", revision is not None)
            )
    found = drift.involving(environment.slug) if drift is not None else []
    return EnvironmentCard(environment, state, heads, found, row)


@dataclass(frozen=True)
class CardFilter:
    """Which environments to show: any of `statuses` (none: all), every one of `labels`."""

    statuses: frozenset[str] = frozenset()
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, statuses: Iterable[str], labels: Iterable[str]) -> CardFilter:
        """From `?status=behind&label=tier:prod` (or `tier=prod`); ValueError with a sentence
        for a label that names no value."""
        pairs = []
        for text in labels:  # several in one, as typed in a filter box: "tier:prod region:eu"
            for label in re.split(r"[\s,]+", text.strip()):
                if not label:
                    continue
                name, sep, value = label.replace("=", ":", 1).partition(":")
                if not sep or not name or not value:
                    raise ValueError(f"{label!r} is not a label filter: write name:value.")
                pairs.append((name, value))
        return cls(frozenset(s for s in statuses if s), tuple(pairs))

    def labels_match(self, environment: Environment) -> bool:
        labels = environment.labels or {}
        return all(labels.get(name) == value for name, value in self.labels)

    def __call__(self, card: EnvironmentCard) -> bool:
        if not self.labels_match(card.environment):
            return False
        return not self.statuses or card.status in self.statuses


def _cards(
    environments: Sequence[Environment],
    indexes: Indexes,
    states: dict[int, CurrentState] | None = None,
) -> dict[int, EnvironmentCard]:
    """Each environment's card, by id, from its stored state (or `states`, just read)."""
    if states is None:
        states = CurrentState.objects.of(environments, unread=True)
    projects = {environment.project_id for environment in environments}
    drift = {d.project_id: d for d in DriftState.objects.filter(project__in=projects)}
    return {
        env.pk: _card(
            env, states.get(env.pk), indexes[env.project_id][0], drift.get(env.project_id)
        )
        for env in environments
    }


def cards_build(
    environments: Sequence[Environment], states: dict[int, CurrentState] | None = None
) -> list[EnvironmentCard]:
    """The cards of these environments alone (a page of a fleet), as last stored (or from
    `states`, just read)."""
    indexes: Indexes = {}
    for environment in environments:
        if environment.project_id not in indexes:
            indexes[environment.project_id] = environment.project.load_scripts()
    cards = _cards(environments, indexes, states)
    return [cards[environment.pk] for environment in environments]


def projects_listed():
    """Every project with the environments a listing shows, in promotion order: a tenant its
    server no longer lists is left out (the status API, the CI gate)."""
    present = Environment.objects.filter(gone_at__isnull=True).select_related("project")
    return Project.objects.prefetch_related(Prefetch("environments", queryset=present))


def overview_build(
    *,
    projects: Iterable[Project],
    refresh: bool = False,
    environments: Sequence[Environment] | None = None,
) -> list[ProjectOverview]:
    """Every project with its environments in promotion order (or only `environments`), as
    last read (the pages: they never connect to a target), or read now (`refresh`: the CLI
    gate)."""
    projects = list(projects)
    if environments is None:
        environments = [env for project in projects for env in project.environments.all()]
    # the gate's read prints no problems: nothing to compile for it
    indexes: Indexes = {
        project.pk: project.load_scripts(syntax=not refresh) for project in projects
    }
    states = environments_read(environments=environments, indexes=indexes) if refresh else None
    cards = _cards(environments, indexes, states)
    by_project: dict[int, list[EnvironmentCard]] = {project.pk: [] for project in projects}
    for environment in environments:
        by_project[environment.project_id].append(cards[environment.pk])
    return [
        ProjectOverview(project, *indexes[project.pk], by_project[project.pk])
        for project in projects
    ]


def environment_card(*, environment: Environment, refresh: bool = False) -> EnvironmentCard:
    states = {environment.pk: environment_read(environment=environment)} if refresh else None
    return cards_build([environment], states)[0]


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
class EnvironmentDetail:
    pending: list[RevisionRow]
    applied: list[RevisionRow]
    history: list[StateChange]  # newest first
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
    environment, state = card.environment, card.state
    index, error = environment.project.load_scripts()
    pending: list[RevisionRow] = []
    applied: list[RevisionRow] = []
    if index is not None and index.revision_map is not None and state is not None:
        pending = _rows(index, state.pending)
        known_heads = [head for head in state.heads if index.knows(head)]
        if not state.unknown and known_heads:
            applied = _rows(index, index.applied(known_heads))
    history = list(environment.changes.select_related("job")[:HISTORY_SHOWN])
    return EnvironmentDetail(
        pending=pending,
        applied=applied,
        history=history,
        index_error=error or (index.fatal if index else None),
        problems=index.problems if index else [],
        index=index,
    )
