"""Whether a history's several heads are meant to be there, or a merge is missing.

Projects with independent branches — expand/contract, plugins with their own labels and bases —
always have several heads and upgrade with `alembic upgrade heads`. Two heads that grew from one
branch without a merge are something else: `alembic upgrade head` refuses them, and the fix is
`alembic merge`. Alembic's own map tells them apart: it carries a branch label down to every
revision of the labelled branch, and up to the branch point it grew from.

No Django here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from environments.core.scripts import ScriptIndex


class HeadsPolicy(StrEnum):
    """What a project declares about several heads."""

    AUTO = "auto"  # judged from the history: separate labels or bases are expected
    EXPECTED = "expected"  # several heads are always fine
    SINGLE = "single"  # the project keeps one head: several always need a merge


@dataclass(frozen=True)
class HeadsVerdict:
    heads: tuple[str, ...]
    expected: bool
    sentence: str  # "" for a single head
    # groups of heads that grew from one branch without a merge, with where they diverged
    diverged: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()

    @property
    def several(self) -> bool:
        return len(self.heads) > 1


def short(revision: str) -> str:
    return revision[:12]


def assess(index: ScriptIndex, policy: HeadsPolicy | str = HeadsPolicy.AUTO) -> HeadsVerdict:
    """Judge the index's heads under the project's policy, with the sentence to show."""
    heads = tuple(index.heads)
    if len(heads) < 2 or index.revision_map is None:
        return HeadsVerdict(heads, True, "")
    policy = HeadsPolicy(policy)
    verdict = index.memo.get(("heads", policy))
    if verdict is None:
        verdict = index.memo[("heads", policy)] = _assess(index, heads, policy)
    return verdict


def _assess(index: ScriptIndex, heads: tuple[str, ...], policy: HeadsPolicy) -> HeadsVerdict:
    count = f"{len(heads)} heads"
    if policy is HeadsPolicy.EXPECTED:
        return HeadsVerdict(
            heads, True, f"{count}, expected (the project declares several heads expected)"
        )
    labels = {head: _labels(index, head) for head in heads}
    ancestors = {head: _ancestors(index, head) for head in heads}
    bases = {head: ancestors[head] & set(index.bases) for head in heads}
    groups = _diverged_groups(heads, labels, bases)
    diverged = tuple(
        (group, _diverged_from(group, ancestors, index)) for group in groups if len(group) > 1
    )
    if diverged:
        missing = "; ".join(
            f"{', '.join(short(h) for h in group)} diverged from "
            f"{', '.join(short(p) for p in points) or 'separate bases'}"
            for group, points in diverged
        )
        return HeadsVerdict(heads, False, f"{count} — a merge is missing: {missing}", diverged)
    if policy is HeadsPolicy.SINGLE:
        return HeadsVerdict(
            heads,
            False,
            f"{count} — the project keeps a single head: merge "
            f"{', '.join(short(h) for h in heads)} with alembic merge heads",
        )
    return HeadsVerdict(heads, True, f"{count}, expected ({_why_separate(heads, labels)})")


def _labels(index: ScriptIndex, head: str) -> frozenset[str]:
    assert index.revision_map is not None
    node = index.revision_map._revision_map.get(head)
    return frozenset(node.branch_labels) if node is not None else frozenset()


def _ancestors(index: ScriptIndex, head: str) -> set[str]:
    """`head` and every revision below it along down_revision (not depends_on)."""
    seen = {head}
    stack = [head]
    revisions = index.revisions
    while stack:
        revision = revisions.get(stack.pop())
        if revision is None:
            continue
        for parent in revision.down_revisions:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _diverged_groups(
    heads: tuple[str, ...],
    labels: dict[str, frozenset[str]],
    bases: dict[str, set[str]],
) -> list[tuple[str, ...]]:
    """Heads joined when they share a base and carry the same branch labels (none, or the
    label of the branch both grew on): one branch that split and was never merged."""
    parent = {head: head for head in heads}

    def find(head: str) -> str:
        while parent[head] != head:
            parent[head] = parent[parent[head]]
            head = parent[head]
        return head

    for i, one in enumerate(heads):
        for other in heads[i + 1 :]:
            if labels[one] == labels[other] and bases[one] & bases[other]:
                parent[find(other)] = find(one)
    groups: dict[str, list[str]] = {}
    for head in heads:
        groups.setdefault(find(head), []).append(head)
    return [tuple(group) for group in groups.values()]


def _diverged_from(
    group: tuple[str, ...], ancestors: dict[str, set[str]], index: ScriptIndex
) -> tuple[str, ...]:
    """The nearest revisions every head of the group grew from (their lowest common
    ancestors). The common ancestors are closed downwards, so the nearest are those with no
    child among them."""
    common = set.intersection(*(ancestors[head] for head in group))
    with_child: set[str] = set()
    for revision_id in common:
        revision = index.revisions.get(revision_id)
        if revision is not None:
            with_child.update(revision.down_revisions)
    return tuple(sorted(common - with_child))


def _why_separate(heads: tuple[str, ...], labels: dict[str, frozenset[str]]) -> str:
    named = sorted({label for head in heads for label in labels[head]})
    unlabelled = [short(head) for head in heads if not labels[head]]
    if named and unlabelled:
        return (
            f"branches {', '.join(named)} and the unlabelled head {', '.join(unlabelled)}"
            if len(unlabelled) == 1
            else f"branches {', '.join(named)} and unlabelled heads on separate bases "
            f"{', '.join(unlabelled)}"
        )
    if named:
        return f"branches {', '.join(named)}"
    return f"separate bases: {', '.join(unlabelled)}"
