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
  acyclic, or is unusual in any way, goes to Alembic's own code, which then names the cycle;
- `_add_branches` gives every revision the branch labels Alembic gives it in one pass down the
  graph and one pass up, instead of walking every descendant of every labelled revision (n² on
  a history whose labelled branches are merged back). The label sets are frozen and shared
  between revisions that hold the same labels: on a long history they are most of the map.
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


class _Unions:
    """Unions of frozen label sets, the same object for the same pair (and for a union that
    adds nothing), so revisions with equal labels share one set."""

    def __init__(self) -> None:
        # keyed by identity; the pair is kept so that neither id is reused while it is a key
        self._made: dict[tuple[int, int], tuple[frozenset[str], frozenset[str], frozenset[str]]]
        self._made = {}

    def __call__(self, a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
        if not b or a is b or b <= a:
            return a
        if not a or a <= b:
            return b
        key = (id(a), id(b))
        found = self._made.get(key)
        if found is None:
            found = self._made[key] = (a, b, a | b)
        return found[2]


def _spread_labels(
    order: list[Revision], map_: Mapping[str | None, Revision | None]
) -> dict[Revision, frozenset[str]]:
    """Every revision's branch labels as Alembic's `_add_branches` leaves them, given the
    revisions parents first.

    Alembic gives a labelled revision's labels to all its descendants (over `down_revision`,
    not `depends_on`), then walks down from its last descendant while a revision is neither a
    branch point (counting `depends_on`) nor a merge point, labelling each. That walk gets
    past the labelled revision only when it and everything above it form one such plain line,
    and then goes on through its ancestors until a branch or merge point. Below: the first
    part as a union over parents, the second as what each plain revision hands its parent."""
    union = _Unions()
    nothing: frozenset[str] = frozenset()
    down: dict[Revision, frozenset[str]] = {}
    for revision in order:
        held = frozenset(revision._orig_branch_labels) if revision._orig_branch_labels else nothing
        for parent_id in revision._versioned_down_revisions:
            held = union(held, down[map_[parent_id]])
        down[revision] = held
    labels: dict[Revision, frozenset[str]] = {}
    handed: dict[Revision, frozenset[str]] = {}  # what a walk carries on to the parent
    plain_line: dict[Revision, bool] = {}  # it and everything above it: one plain line
    for revision in reversed(order):
        if revision._is_real_branch_point or revision.is_merge_point:
            labels[revision] = down[revision]
            plain_line[revision] = False
            continue
        # plain: one child at most, over down_revision or depends_on
        child = map_[next(iter(revision.nextrev))] if revision.nextrev else None
        arriving = handed.get(child, nothing) if child is not None else nothing
        held = labels[revision] = union(down[revision], arriving)
        plain_line[revision] = child is None or plain_line[child]
        if revision.down_revision is not None:
            starts = revision._orig_branch_labels and plain_line[revision]
            handed[revision] = held if starts else arriving
    return labels


class LinearRevisionMap(RevisionMap):
    """A `RevisionMap` whose construction is linear; every answer is Alembic's."""

    _labels_spread = False

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

    def _add_branches(
        self, revisions: Collection[Revision], map_: Mapping[str | None, Revision | None]
    ) -> None:
        if not revisions and not self._labels_spread:
            return  # no label anywhere: nothing to spread
        nodes = [rev for key, rev in map_.items() if rev is not None and key == rev.revision]
        if self._labels_spread:  # add_revision() after the build: Alembic's code, plain sets
            for revision in nodes:
                revision.branch_labels = set(revision.branch_labels)
            super()._add_branches(revisions, map_)
            return
        order = _parents_first(nodes, map_, _versioned)
        if order is None:
            super()._add_branches(revisions, map_)
            return
        for revision, labels in _spread_labels(order, map_).items():
            revision.branch_labels = labels  # frozen: shared, and never changed in place
        self._labels_spread = True

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
