"""The overview of a fleet: how many environments are in each status, the ones that need
attention first, and the filters a person narrows hundreds of environments down with (a text,
a status, labels). Built from the cards of `overviews.overview_build`, so from stored state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

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

    @property
    def filtered(self) -> bool:
        return bool(self.query or self.filters.statuses or self.filters.labels)


def _matches_text(card: EnvironmentCard, words: Sequence[str]) -> bool:
    environment = card.environment
    haystack = " ".join(
        [environment.name, environment.slug, environment.project.name, environment.project.slug]
        + [f"{key}={value}" for key, value in (environment.labels or {}).items()]
    ).lower()
    return all(word in haystack for word in words)


def _group_of(card: EnvironmentCard, group_by: str) -> tuple[bool, str]:
    """Where a card is listed: its project, or its value of the label (those without it last)."""
    environment = card.environment
    if not group_by:
        return False, environment.project.name
    value = (environment.labels or {}).get(group_by)
    return (False, f"{group_by}={value}") if value else (True, f"no {group_by} label")


def _grouped(cards: list[EnvironmentCard], group_by: str) -> list[tuple[str, EnvironmentCard]]:
    """Each card with the title of its group, in the order they are listed."""

    def order(card: EnvironmentCard):
        environment = card.environment
        group = _group_of(card, group_by)
        return (*group, environment.project.name, environment.position, environment.name)

    return [(_group_of(card, group_by)[1], card) for card in sorted(cards, key=order)]


def _paged(fleet: Fleet, visible: list[EnvironmentCard], page: int) -> None:
    """Past CARDS_UP_TO environments: this page's rows as a table, in their groups."""
    if len(visible) <= CARDS_UP_TO:
        return
    keyed = _grouped(visible, fleet.group_by)
    fleet.table = True
    fleet.pages = max((len(keyed) + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    fleet.page = min(max(page, 1), fleet.pages)
    start = (fleet.page - 1) * PAGE_SIZE
    for title, card in keyed[start : start + PAGE_SIZE]:
        if not fleet.groups or fleet.groups[-1].title != title:
            fleet.groups.append(Group(title, []))
        fleet.groups[-1].cards.append(card)


def fleet_build(
    built: list[ProjectOverview],
    *,
    query: str = "",
    filters: CardFilter | None = None,
    group_by: str = "",
    page: int = 1,
) -> Fleet:
    """The counts of every environment, then the cards the text and the filters leave, those
    that need attention listed first; past CARDS_UP_TO, a page of them as a table, grouped by
    project or by the label `group_by`."""
    filters = filters or CardFilter()
    cards = [card for overview in built for card in overview.cards]
    tally = Counter(card.status for card in cards)
    counts = [(status, tally[status]) for status in STATUS_ORDER if tally[status]]
    words = query.lower().split()
    kept = []
    for overview in built:
        shown = [c for c in overview.cards if filters(c) and _matches_text(c, words)]
        if shown or not (words or filters.statuses or filters.labels):
            kept.append(replace(overview, cards=shown))
    visible = [card for overview in kept for card in overview.cards]
    urgent = sorted(
        (card for card in visible if card.status in _URGENCY),
        key=lambda card: (
            _URGENCY[card.status],
            -len(card.state.pending) if card.state is not None else 0,
            card.environment.project.name,
            card.environment.position,
        ),
    )
    fleet = Fleet(
        overviews=kept,
        counts=counts,
        attention=urgent[:ATTENTION_SHOWN],
        attention_more=max(len(urgent) - ATTENTION_SHOWN, 0),
        total=len(cards),
        shown=len(visible),
        query=query,
        filters=filters,
        group_by=group_by,
    )
    _paged(fleet, visible, page)
    return fleet
