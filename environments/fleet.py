"""The overview of a fleet: how many environments are in each status, the ones that need
attention first, and the filters a person narrows hundreds of environments down with (a text,
a status, labels), from the stored states.

The database counts, filters, orders and pages; cards are built only for the rows a page
shows (the attention list and one page of the table, or the few cards of a small project), so
a page costs about the same for 10 environments as for 1,000."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    IntegerField,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Coalesce, NullIf

from dashboard.lib.dbfunctions import BinaryOrder, JSONArrayLength, JSONKeyText
from environments import overviews
from environments.models import Discovery, Environment, Project
from environments.overviews import CardFilter, EnvironmentCard, ProjectOverview

# the order the counts are said in; "not_read": an environment no read has stored yet
STATUS_ORDER = (
    "current",
    "behind",
    "unknown_revision",
    "uninitialized",
    "unreachable",
    "auth_failed",
    "error",
    "not_read",
    "gone",  # a tenant its server no longer lists: kept with its history, no longer read
)
# what needs attention first: a database that cannot be read, then one at an unknown revision
_URGENCY = {
    "unreachable": 0,
    "auth_failed": 0,
    "error": 0,
    "unknown_revision": 1,
    "uninitialized": 2,
    "behind": 3,
    "not_read": 4,
}
ATTENTION_SHOWN = 50
CARDS_UP_TO = 24  # more environments than this are shown as a table, a page at a time
PAGE_SIZE = 100


@dataclass
class Group:
    """A heading and its environments: a project, or a value of the label grouped by."""

    title: str
    cards: list[EnvironmentCard]


@dataclass
class Fleet:
    overviews: list[ProjectOverview]  # filtered: only the projects with a card shown
    counts: list[tuple[str, int]]  # every status present, of every environment (unfiltered)
    attention: list[EnvironmentCard]  # the filtered cards not current, most urgent first
    attention_more: int = 0  # how many more than shown
    total: int = 0  # environments in all
    shown: int = 0  # environments the filters leave
    query: str = ""
    filters: CardFilter = field(default_factory=CardFilter)
    # more than CARDS_UP_TO shown: a table of this page's rows, grouped
    table: bool = False
    groups: list[Group] = field(default_factory=list)
    group_by: str = ""  # "" for the project, else a label's name
    page: int = 1
    pages: int = 1
    discoveries: list[Discovery] = field(default_factory=list)  # where tenants are found

    @property
    def filtered(self) -> bool:
        return bool(self.query or self.filters.statuses or self.filters.labels)


def _annotated(environments: QuerySet[Environment]) -> QuerySet[Environment]:
    """Each environment with the status its card shows and how many revisions it lacks."""
    return environments.annotate(
        shown_status=Case(
            When(gone_at__isnull=False, then=Value("gone")),
            When(current_state__checked_at__isnull=False, then=F("current_state__status")),
            default=Value("not_read"),
            output_field=CharField(),
        ),
        pending_count=Coalesce(JSONArrayLength("current_state__pending"), 0),
    )


def _matching_text(environments: QuerySet[Environment], words: list[str]) -> QuerySet[Environment]:
    """The environments whose name, project or labels (as shown: `name=value`) hold every
    word, in any case. Matched here rather than in SQL, so the text means the same on both
    backends (SQLite folds ASCII case only, and writes labels' JSON with escapes); it reads
    five short columns, only when a text is given."""
    rows = environments.values_list(
        "pk", "name", "slug", "project__name", "project__slug", "labels"
    )
    matching = []
    for pk, name, slug, project_name, project_slug, labels in rows:
        pairs = [f"{key}={value}" for key, value in (labels or {}).items()]
        haystack = " ".join([name, slug, project_name, project_slug, *pairs]).lower()
        if all(word in haystack for word in words):
            matching.append(pk)
    return environments.filter(pk__in=matching)


def _filtered(
    environments: QuerySet[Environment], words: list[str], filters: CardFilter
) -> QuerySet[Environment]:
    if filters.statuses:
        environments = environments.filter(shown_status__in=filters.statuses)
    for position, (name, value) in enumerate(filters.labels):
        alias = f"label_{position}"
        environments = environments.alias(**{alias: JSONKeyText("labels", name)})
        environments = environments.filter(**{alias: value})
    if words:
        environments = _matching_text(environments, words)
    return environments


_URGENCY_ORDER = Case(
    *(When(shown_status=status, then=Value(rank)) for status, rank in _URGENCY.items()),
    output_field=IntegerField(),
)


def _group_of(environment: Environment, group_by: str) -> str:
    """The heading an environment is listed under: its project, or its value of the label."""
    if not group_by:
        return environment.project.name
    value = (environment.labels or {}).get(group_by)
    return f"{group_by}={value}" if value else f"no {group_by} label"


def _table_order(environments: QuerySet[Environment], group_by: str) -> QuerySet[Environment]:
    """By project, or by the label's value (those without it last), then as the admin lists."""
    if not group_by:
        return environments.order_by("project__name", "position", "name", "pk")
    label = BinaryOrder(NullIf(JSONKeyText("labels", group_by), Value("")))
    environments = environments.alias(group_value=label)
    return environments.order_by(
        F("group_value").asc(nulls_last=True), "project__name", "position", "name", "pk"
    )


def _paged(fleet: Fleet, visible: QuerySet[Environment], page: int) -> None:
    """Past CARDS_UP_TO environments: this page's rows as a table, in their groups."""
    fleet.table = True
    fleet.pages = max((fleet.shown + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    fleet.page = min(max(page, 1), fleet.pages)
    start = (fleet.page - 1) * PAGE_SIZE
    rows = list(_table_order(visible, fleet.group_by)[start : start + PAGE_SIZE])
    for card in overviews.cards_build(rows):
        title = _group_of(card.environment, fleet.group_by)
        if not fleet.groups or fleet.groups[-1].title != title:
            fleet.groups.append(Group(title, []))
        fleet.groups[-1].cards.append(card)


def _project_cards(fleet: Fleet, projects: list[Project], visible: QuerySet[Environment]) -> None:
    """Up to CARDS_UP_TO environments: their cards under their projects (every project when
    nothing is filtered, so an empty one still says how to add environments)."""
    environments = list(visible.order_by("project__name", "position", "name", "pk"))
    holding = {environment.project_id for environment in environments}
    kept = [p for p in projects if p.pk in holding or not fleet.filtered]
    fleet.overviews = overviews.overview_build(projects=kept, environments=environments)


def fleet_build(
    projects: Iterable[Project],
    *,
    query: str = "",
    filters: CardFilter | None = None,
    group_by: str = "",
    page: int = 1,
) -> Fleet:
    """The counts of every environment, then the environments the text and the filters
    leave, those that need attention listed first; past CARDS_UP_TO, a page of them as a
    table, grouped by project or by the label `group_by`."""
    projects = list(projects)
    filters = filters or CardFilter()
    everything = _annotated(
        Environment.objects.filter(project__in=projects).select_related("project")
    )
    tally = dict(everything.order_by().values_list("shown_status").annotate(count=Count("pk")))
    visible = _filtered(everything, query.lower().split(), filters)
    urgent = visible.filter(shown_status__in=list(_URGENCY)).order_by(
        _URGENCY_ORDER, "-pending_count", "project__name", "position", "name", "pk"
    )
    attention = list(urgent[:ATTENTION_SHOWN])
    urgent_count = len(attention) if len(attention) < ATTENTION_SHOWN else urgent.count()
    fleet = Fleet(
        overviews=[],
        counts=[(status, tally[status]) for status in STATUS_ORDER if tally.get(status)],
        attention=overviews.cards_build(attention),
        attention_more=urgent_count - len(attention),
        total=sum(tally.values()),
        query=query,
        filters=filters,
        group_by=group_by,
    )
    fleet.discoveries = list(
        Discovery.objects.filter(project__in=projects).select_related("project")
    )
    fleet.shown = visible.count() if fleet.filtered else fleet.total
    if fleet.shown > CARDS_UP_TO:
        _paged(fleet, visible, page)
    else:
        _project_cards(fleet, projects, visible)
    return fleet
