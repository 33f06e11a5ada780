"""What a job will do, worked out before it runs: Alembic's own answer, without running anything.

`plan_job` resolves a target the way the alembic CLI does (`heads`, a revision id or a unique
prefix, a branch label, `label@head`, `+N`/`-N`, `base`), lists the revisions an upgrade would
apply or a downgrade would unapply in Alembic's order (`RevisionMap.iterate_revisions`, as
`ScriptDirectory._upgrade_revs`/`_downgrade_revs` call it), and plays the steps through
Alembic's `HeadMaintainer` logic to know which heads the version table will hold afterwards. The
worker checks the database against both: the heads before (or it refuses to run) and after (or
the job fails).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from alembic.runtime.migration import HeadMaintainer, RevisionStep
from alembic.script.revision import RevisionError, RevisionMap
from alembic.util import CommandError

from environments.core.scripts import ScriptIndex

KINDS = ("upgrade", "downgrade", "stamp")
_RELATIVE = re.compile(r"^[+-]\d+$")


class PlanError(Exception):
    """The target cannot be planned from where the database stands; the message says why."""


@dataclass(frozen=True)
class Plan:
    kind: str
    target: str  # as requested; passed to alembic unchanged (the heads it is relative to are
    # checked before running, so alembic resolves it the same way)
    from_heads: tuple[str, ...]
    to_heads: tuple[str, ...]
    revisions: tuple[str, ...]  # upgrade: in apply order; downgrade: in unapply order

    @property
    def changes_nothing(self) -> bool:
        return set(self.from_heads) == set(self.to_heads) and not self.revisions

    @property
    def alembic_args(self) -> list[str]:
        if self.kind == "stamp":
            # Retort's stamp sets the version table to exactly the target; --purge also makes
            # it work on a table holding revisions the scripts do not know.
            return ["stamp", "--purge", self.target]
        return [self.kind, self.target]

    def sql_args(self) -> list[str]:
        """Arguments for the offline SQL of exactly this plan (`FROM:TO --sql`)."""
        start = ",".join(self.from_heads) if self.from_heads else "base"
        if self.kind == "upgrade":
            return ["upgrade", f"{start}:{self.target}", "--sql"]
        if self.kind == "downgrade":
            return ["downgrade", f"{start}:{self.target}", "--sql"]
        return ["stamp", "--purge", self.target, "--sql"]


class _Step(RevisionStep):
    """A RevisionStep that knows its revision but has no module (nothing is imported)."""

    def __init__(self, revision_map: RevisionMap, revision, is_upgrade: bool) -> None:
        self.revision_map = revision_map
        self.revision = revision
        self.is_upgrade = is_upgrade
        self.migration_fn = None  # type: ignore[assignment]


class _Heads(HeadMaintainer):
    """Alembic's version-table bookkeeping, on a set instead of a table."""

    def __init__(self, heads: Sequence[str]) -> None:
        self.heads = set(heads)

    def _insert_version(self, version: str) -> None:
        self.heads.add(version)

    def _delete_version(self, version: str) -> None:
        self.heads.remove(version)

    def _update_version(self, from_: str, to_: str) -> None:
        self.heads.remove(from_)
        self.heads.add(to_)


def _message(exc: Exception) -> str:
    text = str(exc.args[0] if exc.args else exc)
    return text.rstrip(".") + "."


def _resolve_ids(revision_map: RevisionMap, target: str) -> tuple[str, ...]:
    try:
        found = revision_map.get_revisions(target)
    except (RevisionError, CommandError) as exc:
        raise PlanError(f"{target!r} is not a revision here: {_message(exc)}") from None
    return tuple(sorted(rev.revision for rev in found if rev is not None))


def plan_job(index: ScriptIndex, kind: str, target: str, from_heads: Sequence[str]) -> Plan:
    """The plan for `alembic <kind> <target>` on a database whose version table holds
    `from_heads`. Raises PlanError with a sentence a release manager can act on."""
    if kind not in KINDS:
        raise PlanError(f"Unknown job kind {kind!r}; choose one of {', '.join(KINDS)}.")
    target = target.strip()
    if not target:
        raise PlanError("Choose a target revision.")
    revision_map = index.revision_map
    if revision_map is None:
        raise PlanError(index.fatal or "The script directory could not be read.")
    from_heads = tuple(sorted(from_heads))
    unknown = [head for head in from_heads if not index.knows(head)]
    if kind == "stamp":
        if _RELATIVE.match(target):
            raise PlanError("Stamp to a revision, a branch label, heads or base, not +N/-N.")
        to_heads = () if target == "base" else _resolve_ids(revision_map, target)
        return Plan(kind, target, from_heads, to_heads, ())
    if unknown:
        raise PlanError(
            f"The database holds {', '.join(unknown)}, which the scripts do not have, so "
            f"alembic cannot {kind} it. Deploy the code that has it, or stamp the database "
            "to a revision the scripts know."
        )
    if not _RELATIVE.match(target) and target not in {"base", "heads", "head"}:
        _resolve_ids(revision_map, target)  # a clear error for a typo before iterating
    try:
        if kind == "upgrade":
            found = revision_map.iterate_revisions(target, from_heads, implicit_base=True)
            steps = [_Step(revision_map, rev, True) for rev in reversed(list(found))]
        else:
            found = revision_map.iterate_revisions(from_heads, target, select_for_downgrade=True)
            steps = [_Step(revision_map, rev, False) for rev in found]
    except (RevisionError, CommandError) as exc:
        raise PlanError(f"Cannot {kind} to {target!r} from here: {_message(exc)}") from None
    heads = _Heads(from_heads)
    for step in steps:
        heads.update_to_step(step)
    revisions = tuple(step.revision.revision for step in steps)
    return Plan(kind, target, from_heads, tuple(sorted(heads.heads)), revisions)


RUNNING = re.compile(r"Running (upgrade|downgrade|stamp_revision) (.*?) -> ([^,\s]*)")


def step_of(line: str) -> tuple[str, str] | None:
    """(kind, revision arrived at) for alembic's `Running upgrade A -> B, msg` log lines."""
    match = RUNNING.search(line)
    if match is None:
        return None
    return match.group(1), match.group(3)
