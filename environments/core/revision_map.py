"""Alembic's `RevisionMap`, built in linear time.

Alembic builds its map in three steps that are quadratic in the number of revisions:
- it collects heads in SQLAlchemy's `OrderedSet`, whose `discard` is `list.remove`, and discards
  every revision that has a child: about n²/4 comparisons when files come in name order;
- `_normalize_depends_on` walks every ancestor of every revision that has a `depends_on`;
- `_detect_cycles` walks the whole graph four times with a generator per step.
On 2,000 revisions that is most of the time a read takes (and all of `alembic history`'s time
that is not spent importing files).

`LinearRevisionMap` keeps Alembic's semantics and its code where it can:
- `_revision_map` is Alembic's own function, run with an ordered set whose `discard` is O(1)
  (a dict); insertion order, and so the order of heads and of the map, is unchanged;
- `_normalize_depends_on` computes, parents first, the dependencies every revision inherits from
  its ancestors, instead of walking the ancestors of each revision again;
- `_detect_cycles` proves the graph acyclic by a topological sort; an acyclic graph passes
  Alembic's checks (every revision lies between a head and a base), so only a graph that is not
  acyclic, or is unusual in any way, goes to Alembic's own code, which then names the cycle.
`tests/test_revision_map.py` checks the result against a stock `RevisionMap`, attribute by
attribute, on generated histories and on broken ones.

No Django here.
"""

from __future__ import annotations

import operator
import types
from collections.abc import Callable, Collection, Iterable, Mapping

from alembic import util as alembic_util
from alembic.script.revision import Revision, RevisionMap
from sqlalchemy import util as sqlalchemy_util


class _OrderedSet(dict):
    """The part of SQLAlchemy's OrderedSet that `_revision_map` uses, with O(1) discard."""

    __slots__ = ()

    def add(self, item: object) -> None:
        self[item] = None

    def discard(self, item: object) -> None:
        self.pop(item, None)


class _SqlalchemyUtil:
    """`sqlalchemy.util` as `_revision_map` sees it: the same, but for OrderedSet."""

    OrderedSet = _OrderedSet

    def __getattr__(self, name: str) -> object:
        return getattr(sqlalchemy_util, name)


def _with_globals(function: Callable, **replaced: object) -> Callable:
    """`function` itself, its names looked up in a copy of its module with `replaced` set."""
    return types.FunctionType(
        function.__code__,
        {**function.__globals__, **replaced},
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )


_build_revision_map = _with_globals(
    RevisionMap.__dict__["_revision_map"].fget, sqlautil=_SqlalchemyUtil()
)


_versioned = operator.attrgetter("_versioned_down_revisions")
_all = operator.attrgetter("_all_down_revisions")


def _parents_first(
    revisions: Iterable[Revision],
    map_: Mapping[str | None, Revision | None],
    parents_of: Callable[[Revision], tuple[str, ...]],
) -> list[Revision] | None:
    """The revisions, each after its parents (Kahn's algorithm); None when there is no such
    order (a cycle) or a parent is named by anything but its own revision id."""
    children: dict[Revision, list[Revision]] = {}
    waiting: dict[Revision, int] = {}
    ready: list[Revision] = []
    count = 0
    for revision in revisions:
        count += 1
        ids = parents_of(revision)
        if not ids:
            ready.append(revision)
            continue
        unique = ids if len(ids) == 1 else set(ids)
        for revision_id in unique:
            parent = map_.get(revision_id)
            if parent is None or parent.revision != revision_id:
                return None
            children.setdefault(parent, []).append(revision)
        waiting[revision] = len(unique)
    order: list[Revision] = []
    while ready:
        revision = ready.pop()
        order.append(revision)
        for child in children.get(revision, ()):
            left = waiting[child] - 1
            waiting[child] = left
            if not left:
                ready.append(child)
    return order if len(order) == count else None


class LinearRevisionMap(RevisionMap):
    """A `RevisionMap` whose construction is linear; every answer is Alembic's."""

    @alembic_util.memoized_property
    def _revision_map(self):  # noqa: ANN202 - Alembic's own type
        return _build_revision_map(self)

    def _normalize_depends_on(
        self, revisions: Collection[Revision], map_: Mapping[str | None, Revision | None]
    ) -> None:
        if not any(revision._resolved_dependencies for revision in revisions):
            for revision in revisions:
                revision._normalized_resolved_dependencies = ()
            return
        order = _parents_first(revisions, map_, _versioned)
        if order is None:
            super()._normalize_depends_on(revisions, map_)
            return
        # What each revision's ancestors depend on: a dependency one of them already has is
        # not an immediate one (Alembic's rule), so it is left out of the normalised set.
        inherited: dict[Revision, frozenset[str]] = {}
        nothing: frozenset[str] = frozenset()
        for revision in order:
            held = nothing
            for revision_id in revision._versioned_down_revisions:
                parent = map_[revision_id]
                from_parent = inherited[parent]
                if parent._resolved_dependencies:
                    from_parent = from_parent.union(parent._resolved_dependencies)
                held = from_parent if not held else held | from_parent
            inherited[revision] = held
            if revision._resolved_dependencies:
                # the same set operations as Alembic's, so the tuple comes out in its order
                normalized = set(revision._resolved_dependencies)
                normalized.difference_update(held)
                revision._normalized_resolved_dependencies = tuple(normalized)
            else:
                revision._normalized_resolved_dependencies = ()

    def _detect_cycles(self, rev_map, heads, bases, _real_heads, _real_bases) -> None:  # noqa: ANN001
        # Acyclic over all edges implies acyclic over the versioned ones (a subgraph).
        if (
            rev_map
            and heads
            and bases
            and _real_heads
            and _real_bases
            and _parents_first(rev_map.values(), rev_map, _all) is not None
        ):
            return
        super()._detect_cycles(rev_map, heads, bases, _real_heads, _real_bases)
