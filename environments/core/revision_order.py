"""Alembic's answer to "what does a database at these heads hold, and what would `alembic
upgrade heads` apply, in which order", in time linear in the history.

Alembic's `iterate_revisions` collects the revisions (linear) and then orders them with
`RevisionMap._topological_sort`, which walks down from the heads and, at every merge, branch
or dependency, recomputes the whole ancestor set of each open line: quadratic on a long
history with many merges (2 s for one answer at 5,000 revisions). `upgrade_order` is the same
walk, the same rules and the same tie-breaks, with two facts in place of the ancestor sets:

- a revision may be emitted only when none of the other open lines still holds it below, and
  that is so exactly when none of its children (over down_revision and depends_on) in the set
  is still waiting: a count per revision;
- when one is held, the walk moves to the first open line (in Alembic's list order) that holds
  it, found by a search down from each line that never goes below the revision held (a
  position in a parents-first order bounds it) — a few revisions in practice.

`tests/test_revision_order.py` compares every answer with Alembic's own on random histories
with branches, merges, labels and dependencies; `ScriptIndex` uses Alembic's code for
anything this module does not take (a revision the map does not know, a graph it cannot order).

No Django here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from alembic.script.revision import Revision

RevisionMapping = Mapping[str | None, Revision | None]


class Unusual(Exception):
    """Not a question this module answers: ask Alembic."""


def _node(map_: RevisionMapping, revision_id: str) -> Revision:
    node = map_.get(revision_id)
    if node is None or node.revision != revision_id:
        raise Unusual(revision_id)  # unknown, or a branch label: Alembic resolves (or names) it
    return node


def ancestors(map_: RevisionMapping, heads: Iterable[str]) -> frozenset[str]:
    """`heads` and every revision below them, over down_revision and depends_on: what a
    database at `heads` holds (`alembic upgrade` counts these as applied). Heads one of which
    is below another are Alembic's to refuse ("overlaps with other requested revisions")."""
    seen: set[str] = set()
    stack = [_node(map_, head) for head in heads]
    starts = set(heads)
    while stack:
        node = stack.pop()
        if node.revision in seen:
            continue
        seen.add(node.revision)
        for parent in node._normalized_down_revisions:
            if parent in starts:
                raise Unusual(f"{parent} is below another of {sorted(starts)}")
            if parent not in seen:
                stack.append(_node(map_, parent))
    return frozenset(seen)


def positions(map_: RevisionMapping) -> dict[str, int]:
    """Each revision's place in the map's key order (Alembic's tie-break between lines)."""
    return {key: place for place, key in enumerate(map_) if key is not None and key != ()}


def upgrade_order(
    map_: RevisionMapping,
    todo: Collection[str],
    targets: Iterable[str],
    places: Mapping[str, int],
    depth: Mapping[str, int],
) -> list[str]:
    """`RevisionMap._topological_sort(todo, targets)`: the revisions of `todo`, newest first.

    `places` is `positions(map_)`; `depth` any numbering with every revision above its parents
    (over down_revision and depends_on)."""
    todo = set(todo)
    waiting: dict[str, int] = dict.fromkeys(todo, 0)  # children in todo not yet emitted
    for revision_id in todo:
        for parent in _node(map_, revision_id)._normalized_down_revisions:
            if parent in waiting:
                waiting[parent] += 1
    lines = sorted({t for t in targets if t in todo}, key=places.__getitem__)
    output: list[str] = []
    emitted: set[str] = set()
    at = 0
    while lines:
        candidate = lines[at]
        if waiting[candidate]:
            at = _holder(map_, lines, at, candidate, emitted, depth)
            continue
        output.append(candidate)
        emitted.add(candidate)
        node = _node(map_, candidate)
        for parent in node._normalized_down_revisions:
            if parent in waiting:
                waiting[parent] -= 1
        below = [
            parent
            for parent in node._normalized_down_revisions
            if parent in todo and parent not in emitted and parent not in lines
        ]
        if not below:
            del lines[at]
            at = max(at - 1, 0)
        else:
            lines[at] = below[0]
            lines.extend(below[1:])
    if len(output) != len(todo):
        raise Unusual("the walk did not reach every revision")
    return output


def _holder(
    map_: RevisionMapping,
    lines: list[str],
    at: int,
    held: str,
    emitted: set[str],
    depth: Mapping[str, int],
) -> int:
    """The first open line, other than `at`, with `held` below it (Alembic's choice)."""
    floor = depth[held]
    for index, line in enumerate(lines):
        if index == at:
            continue
        seen = {line}
        stack = [line]
        while stack:
            revision_id = stack.pop()
            if revision_id == held:
                return index
            for parent in _node(map_, revision_id)._normalized_down_revisions:
                if parent not in seen and parent not in emitted and depth[parent] >= floor:
                    seen.add(parent)
                    stack.append(parent)
    raise Unusual(f"{held} waits on a line no open head holds")


def depths(map_: RevisionMapping) -> dict[str, int]:
    """A number per revision, higher than its parents' (over down_revision and depends_on)."""
    nodes = [node for key, node in map_.items() if node is not None and key == node.revision]
    depth: dict[str, int] = {}
    entered: set[str] = set()
    for node in nodes:
        if node.revision in depth:
            continue
        stack: list[tuple[Revision, bool]] = [(node, False)]
        while stack:
            current, expanded = stack.pop()
            if current.revision in depth:
                continue
            parents = current._normalized_down_revisions
            if expanded:
                depth[current.revision] = 1 + max((depth[p] for p in parents), default=-1)
                continue
            if current.revision in entered:
                raise Unusual(f"a cycle through {current.revision}")
            entered.add(current.revision)
            stack.append((current, True))
            for parent in parents:
                if parent not in depth:
                    stack.append((_node(map_, parent), False))
    return depth
