"""Lay out a revision graph the way `git log --graph` draws history: newest at the top.

Every revision gets a row (children above parents) and a lane. An edge from a revision to its
parent reserves a lane for the rows in between, so no node is ever placed on a lane an edge is
travelling: edges cannot pass through nodes they do not connect. `depends_on` edges run in
gutter columns to the right of all lanes, entering and leaving at their endpoints' rows (each
row holds exactly one node), so they cannot cross a node either.

Long linear runs fold into one node; revisions that matter — heads, bases, branch points,
merges, branch labels, depends_on endpoints, environment markers, and every revision pending
for an environment — are never folded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from environments.core.scripts import ScriptIndex

ROW = 28  # pixels per row
LANE = 18  # pixels per lane
MARGIN = 16


@dataclass
class Node:
    id: str  # a revision id, or "fold:<top>" for a folded run
    row: int = 0
    lane: int = 0
    parents: tuple[str, ...] = ()  # node ids
    dependencies: tuple[str, ...] = ()  # node ids (depends_on)
    folded: tuple[str, ...] = ()  # for a fold: the revisions it stands for, newest first

    @property
    def is_fold(self) -> bool:
        return bool(self.folded)

    @property
    def x(self) -> int:
        return MARGIN + self.lane * LANE

    @property
    def y(self) -> int:
        return MARGIN + self.row * ROW


@dataclass
class Edge:
    child: str
    parent: str
    kind: str  # "parent" | "depends_on"
    points: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Layout:
    nodes: list[Node]  # in row order
    edges: list[Edge]
    lanes: int
    gutters: int
    by_id: dict[str, Node]

    @property
    def width(self) -> int:
        return MARGIN * 2 + (self.lanes + self.gutters) * LANE

    @property
    def height(self) -> int:
        return MARGIN * 2 + max(len(self.nodes) - 1, 0) * ROW


def protected_revisions(
    index: ScriptIndex,
    *,
    markers: Mapping[str, Sequence[str]] = {},
    pending: Iterable[str] = (),
    keep: Iterable[str] = (),
) -> set[str]:
    """Revisions that must stay visible: structure, markers and what environments still need."""
    children: dict[str, int] = {}
    dependency_ends: set[str] = set()
    for revision in index.revisions.values():
        for parent in revision.down_revisions:
            children[parent] = children.get(parent, 0) + 1
        if revision.dependencies:
            dependency_ends.add(revision.revision)
            dependency_ends.update(index.dependencies_of(revision.revision))
    protected = set(index.heads) | set(index.bases) | dependency_ends | set(pending) | set(keep)
    for revision in index.revisions.values():
        if len(revision.down_revisions) != 1 or revision.branch_labels:
            protected.add(revision.revision)
        if children.get(revision.revision, 0) != 1:
            protected.add(revision.revision)
    for heads in markers.values():
        protected.update(heads)
    return protected


def order(index: ScriptIndex) -> list[str]:
    """Children before parents, each branch kept together (depth first from the heads)."""
    revisions = index.revisions
    children_left: dict[str, int] = {rev: 0 for rev in revisions}
    for revision in revisions.values():
        for parent in revision.down_revisions:
            if parent in children_left:
                children_left[parent] += 1
    # Newest heads last on the stack so the first head is drawn leftmost and on top.
    stack = sorted((rev for rev, n in children_left.items() if n == 0), reverse=True)
    ordered: list[str] = []
    while stack:
        current = stack.pop()
        ordered.append(current)
        for parent in reversed(revisions[current].down_revisions):
            if parent not in children_left:
                continue
            children_left[parent] -= 1
            if children_left[parent] == 0:
                stack.append(parent)
    return ordered


def layout(
    index: ScriptIndex,
    *,
    markers: Mapping[str, Sequence[str]] = {},
    pending: Iterable[str] = (),
    keep: Iterable[str] = (),
    fold_runs_longer_than: int = 4,
    expand: Iterable[str] = (),
) -> Layout:
    """Place every revision (or fold) on a row and a lane, and route every edge."""
    ordered = order(index)
    protected = protected_revisions(index, markers=markers, pending=pending, keep=keep)
    nodes = _fold(index, ordered, protected, fold_runs_longer_than, set(expand))
    by_id = {node.id: node for node in nodes}
    lanes_used, travel = _assign_lanes(nodes)
    edges = _parent_edges(nodes, by_id, travel)
    gutters = _dependency_edges(nodes, by_id, edges, lanes_used)
    return Layout(nodes, edges, lanes_used, gutters, by_id)


def _fold(
    index: ScriptIndex,
    ordered: list[str],
    protected: set[str],
    threshold: int,
    expand: set[str],
) -> list[Node]:
    """Collapse runs of unprotected single-parent, single-child revisions into fold nodes."""
    revisions = index.revisions
    nodes: list[Node] = []
    rename: dict[str, str] = {}
    position = 0
    while position < len(ordered):
        run_end = position
        while (
            run_end < len(ordered)
            and ordered[run_end] not in protected
            and (
                run_end == position
                or revisions[ordered[run_end - 1]].down_revisions[0] == ordered[run_end]
            )
        ):
            run_end += 1
        run = ordered[position:run_end]
        if len(run) > threshold and not (expand & set(run)):
            fold_id = f"fold:{run[0]}"
            for revision in run:
                rename[revision] = fold_id
            bottom = revisions[run[-1]]
            nodes.append(Node(id=fold_id, parents=bottom.down_revisions, folded=tuple(run)))
            position = run_end
            continue
        if not run:
            run = [ordered[position]]
            run_end = position + 1
        for revision in run:
            rev = revisions[revision]
            # a branch label in depends_on is drawn to the revision Alembic resolves it to
            dependencies = index.dependencies_of(revision) if rev.dependencies else ()
            nodes.append(Node(id=revision, parents=rev.down_revisions, dependencies=dependencies))
        position = run_end
    for node in nodes:
        node.parents = tuple(
            rename.get(p, p) for p in node.parents if p in revisions or p in rename
        )
        node.dependencies = tuple(rename.get(d, d) for d in node.dependencies if d in revisions)
    for row, node in enumerate(nodes):
        node.row = row
    return nodes


def _assign_lanes(nodes: list[Node]) -> tuple[int, dict[tuple[str, str], int]]:
    """git-log style lanes: an edge holds its lane until its parent's row.

    Returns the number of lanes used and, for each child→parent edge, the lane it travels in.
    """
    lanes: list[str | None] = []
    travel: dict[tuple[str, str], int] = {}
    used = 0
    for node in nodes:
        waiting = [i for i, awaited in enumerate(lanes) if awaited == node.id]
        if waiting:
            lane = waiting[0]
            for extra in waiting[1:]:
                lanes[extra] = None
        else:
            lane = _free_lane(lanes)
        node.lane = lane
        lanes[lane] = None
        for number, parent in enumerate(node.parents):
            # Each edge keeps a lane of its own down to its parent's row, where lanes converge.
            slot = lane if number == 0 else _free_lane(lanes, after=lane)
            lanes[slot] = parent
            travel[(node.id, parent)] = slot
        used = max(used, len(lanes))
        while lanes and lanes[-1] is None:
            lanes.pop()
    return max(used, 1), travel


def _free_lane(lanes: list[str | None], after: int = -1) -> int:
    for i in range(after + 1, len(lanes)):
        if lanes[i] is None:
            return i
    for i in range(0, min(after + 1, len(lanes))):
        if lanes[i] is None:
            return i
    lanes.append(None)
    return len(lanes) - 1


def _parent_edges(
    nodes: list[Node], by_id: dict[str, Node], travel: dict[tuple[str, str], int]
) -> list[Edge]:
    """Each child→parent edge: leave the child, travel its reserved lane, enter the parent."""
    edges = []
    for node in nodes:
        for parent_id in node.parents:
            parent = by_id[parent_id]
            x_travel = MARGIN + travel[(node.id, parent_id)] * LANE
            points = [(node.x, node.y)]
            if parent.row - node.row > 1:
                points.append((x_travel, node.y + ROW))
                points.append((x_travel, parent.y - ROW))
            points.append((parent.x, parent.y))
            edges.append(Edge(node.id, parent_id, "parent", _dedupe(points)))
    return edges


def _dependency_edges(
    nodes: list[Node], by_id: dict[str, Node], edges: list[Edge], lanes_used: int
) -> int:
    """Route depends_on edges through gutter columns right of the lanes; returns gutters used."""
    requests = sorted(
        (
            (min(node.row, by_id[dep].row), max(node.row, by_id[dep].row), node.id, dep)
            for node in nodes
            for dep in node.dependencies
            if dep in by_id
        ),
    )
    gutter_free_from: list[int] = []  # first row each gutter is free again
    for top, bottom, child, dependency in requests:
        free = [g for g, free_from in enumerate(gutter_free_from) if free_from < top]
        if free:
            gutter = free[0]
        else:
            gutter = len(gutter_free_from)
            gutter_free_from.append(-1)
        gutter_free_from[gutter] = bottom
        x = MARGIN + (lanes_used + gutter) * LANE
        start, end = by_id[child], by_id[dependency]
        points = [(start.x, start.y), (x, start.y), (x, end.y), (end.x, end.y)]
        edges.append(Edge(child, dependency, "depends_on", points))
    return len(gutter_free_from)


def _dedupe(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    result: list[tuple[int, int]] = []
    for point in points:
        if not result or result[-1] != point:
            result.append(point)
    return result
