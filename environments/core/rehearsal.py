"""What a rehearsal measures while the plan runs on a copy: how long each revision took (from
the moment alembic says it starts one to the moment it starts the next, or ends), which
tables PostgreSQL rewrote (a table whose storage file changed: `pg_class.relfilenode`, as a
type change or a volatile default does), and the locks the run held, sampled from `pg_locks`.

No Django here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

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

    def current(self) -> str | None:
        """The revision running now (None: none started yet)."""
        return self.steps[-1][0] if self.steps else None

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


_HELD = text(
    """
    SELECT l.relation::regclass::text, l.mode
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE a.application_name = :app AND a.datname = current_database() AND l.granted
      AND l.locktype = 'relation' AND l.mode <> 'AccessShareLock' AND l.relation >= 16384
    """
)


class LockSampler:
    """While the plan runs on the copy: the locks its sessions (named `application`) hold on
    tables and indexes, sampled every `every` seconds on a connection of its own, each with
    the revision running when it was seen (`current`). Reads take AccessShareLock, which
    blocks nobody's reads or writes: left out."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        application: str,
        current: Callable[[], str | None],
        every: float = 0.05,
    ) -> None:
        self.connect, self.application, self.current, self.every = (
            connect,
            application,
            current,
            every,
        )
        self.spans: dict[tuple[str, str, str], list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rehearsal-locks", daemon=True)

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _sample(self) -> None:
        try:
            connection = self.connect()
        except SQLAlchemyError:
            return
        with connection:
            while not self._stop.wait(self.every):
                try:
                    rows = connection.execute(_HELD, {"app": self.application}).all()
                except SQLAlchemyError:
                    return
                now = time.monotonic()
                revision = self.current() or ""
                for relation, mode in rows:
                    span = self.spans.setdefault((revision, relation, mode), [now, now])
                    span[1] = now

    def held(self) -> list[dict]:
        """[{"revision", "relation", "mode", "seconds"}], the longest first."""
        found = [
            {
                "revision": revision,
                "relation": relation.removeprefix("public."),
                "mode": mode,
                "seconds": round(last - first + self.every, 2),
            }
            for (revision, relation, mode), (first, last) in self.spans.items()
        ]
        return sorted(found, key=lambda lock: -lock["seconds"])
