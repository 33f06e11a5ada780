"""What a rehearsal measures while the plan runs on a copy: how long each revision took (from
the moment alembic says it starts one to the moment it starts the next, or ends), and which
tables PostgreSQL rewrote (a table whose storage file changed: `pg_class.relfilenode`, as a
type change or a volatile default does).

No Django here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Connection

from environments.core.plan import RUNNING

_FILES = text(
    """
    SELECT n.nspname || '.' || c.relname, c.relfilenode
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%'
    """
)


@dataclass
class Timings:
    """Wraps a line callback: each `Running upgrade A -> B` line starts B's clock."""

    on_line: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    steps: list[tuple[str, float]] = field(default_factory=list)  # (revision, started)
    ended: float | None = None

    def __call__(self, line: str) -> None:
        running = RUNNING.search(line)
        if running:
            kind, before, after = running.groups()
            revision = before.split(",")[0].strip() if kind == "downgrade" else after
            self.steps.append((revision, self.clock()))
        self.on_line(line)

    def end(self) -> None:
        self.ended = self.clock()

    def per_revision(self) -> list[dict]:
        """[{"revision", "seconds"}] in the order they ran; the last one ends at `end()`."""
        out = []
        for position, (revision, started) in enumerate(self.steps):
            following = self.steps[position + 1][1] if position + 1 < len(self.steps) else None
            finished = following if following is not None else (self.ended or started)
            out.append({"revision": revision, "seconds": round(finished - started, 3)})
        return out


def storage_files(connection: Connection) -> dict[str, int]:
    """Each table's storage file (PostgreSQL), to find the ones a run rewrote."""
    return {name: node for name, node in connection.execute(_FILES)}


def rewritten(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Tables that existed before and have another storage file now, without their schema
    when it is public."""
    return sorted(
        name.removeprefix("public.")
        for name, node in after.items()
        if name in before and before[name] != node
    )
