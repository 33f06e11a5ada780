"""Who a run waits for: PostgreSQL's view of a backend stuck on a lock (`pg_locks`,
`pg_stat_activity`, `pg_blocking_pids`), in the words a person needs —

    waiting 3.2 s for AccessExclusiveLock on orders, held by pid 4711 (user app, app=billing,
    idle in transaction for 14 min: SELECT * FROM orders WHERE …)

— and when a failed run may be tried again: it failed on a lock timeout (SQLSTATE 55P03) and
the revision it was in ran inside a transaction PostgreSQL rolled back. A revision that runs
outside one (`autocommit_block`, `CREATE INDEX CONCURRENTLY`) may have committed part of its
work, so it is never retried.

No Django here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

# the backends of alembic's run (found by the application_name Retort gives it) that wait for
# a lock, with every backend that blocks them and what that one holds on the same object
WAITS = """
    SELECT w.pid, l.mode, l.locktype,
           CASE WHEN l.relation IS NOT NULL THEN l.relation::regclass::text END,
           extract(epoch FROM clock_timestamp() - w.query_start),
           b.pid, b.usename, b.application_name, host(b.client_addr), b.state,
           extract(epoch FROM clock_timestamp() - b.state_change),
           left(b.query, 400),
           (SELECT string_agg(DISTINCT h.mode, ', ') FROM pg_locks h
             WHERE h.pid = b.pid AND h.granted AND h.locktype = l.locktype
               AND h.database IS NOT DISTINCT FROM l.database
               AND h.relation IS NOT DISTINCT FROM l.relation)
    FROM pg_stat_activity w
    JOIN pg_locks l ON l.pid = w.pid AND NOT l.granted
    CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocking(pid)
    JOIN pg_stat_activity b ON b.pid = blocking.pid
    WHERE w.application_name = :app AND w.datname = current_database()
    ORDER BY w.pid, b.pid
    """

_OUTSIDE = re.compile(r"autocommit_block|concurrently", re.IGNORECASE)
_LOCK_TIMEOUT = ("LockNotAvailable", "lock timeout", "could not obtain lock")


@dataclass(frozen=True)
class Blocker:
    """A session holding what a run waits for."""

    pid: int
    user: str
    application: str
    client: str
    state: str
    state_seconds: float  # how long it has been in that state
    query: str
    holds: str  # the lock modes it holds on the object

    def phrase(self) -> str:
        who = [f"user {self.user}"] if self.user else []
        if self.application:
            who.append(f"app={self.application}")
        if self.client:
            who.append(f"from {self.client}")
        state = self.state or "state unknown"
        if self.state_seconds:
            state += f" for {_age(self.state_seconds)}"
        who.append(state)
        if self.holds:
            who.append(f"holding {self.holds}")
        query = first_line(self.query)
        if query:
            label = "running" if self.state == "active" else "last query"
            who.append(f"{label}: {query}")
        return f"pid {self.pid} ({', '.join(who)})"


@dataclass(frozen=True)
class LockWait:
    """One backend of the run waiting for a lock, and who holds it."""

    pid: int
    mode: str
    object: str  # "orders", or the lock type ("transactionid", "advisory") when not a table
    seconds: float
    blockers: tuple[Blocker, ...] = field(default=())

    def sentence(self, *, live: bool = True) -> str:
        """ "waiting 3.2 s for …" while it waits; "it waited for …" once the run gave up."""
        held = "; ".join(blocker.phrase() for blocker in self.blockers) or "nobody Retort can see"
        waiting = f"waiting {self.seconds:.1f} s" if live else "it waited"
        return f"{waiting} for {self.mode} on {self.object}, held by {held}"

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> LockWait:
        blockers = tuple(Blocker(**blocker) for blocker in data.get("blockers", ()))
        return cls(**{**data, "blockers": blockers})


def waits(connection: Connection, application: str) -> list[LockWait]:
    """What the backends named `application` wait for now (empty: nothing)."""
    from sqlalchemy import text  # here, not at import: the models import this module

    found: dict[int, LockWait] = {}
    for row in connection.execute(text(WAITS), {"app": application}):
        pid, mode, locktype, relation, seconds, *rest = row
        blocker = Blocker(
            pid=rest[0],
            user=rest[1] or "",
            application=rest[2] or "",
            client=rest[3] or "",
            state=rest[4] or "",
            state_seconds=float(rest[5] or 0),
            query=rest[6] or "",
            holds=rest[7] or "",
        )
        wait = found.get(pid) or LockWait(
            pid=pid, mode=mode, object=relation or locktype, seconds=float(seconds or 0)
        )
        found[pid] = LockWait(
            wait.pid, wait.mode, wait.object, wait.seconds, (*wait.blockers, blocker)
        )
    return list(found.values())


def is_lock_timeout(output: str) -> bool:
    """alembic failed because a statement gave up waiting for a lock (55P03)."""
    return any(marker in output for marker in _LOCK_TIMEOUT)


def outside_transaction(source: str) -> bool:
    """A revision file that runs (some of) its work outside a transaction: an
    `autocommit_block` or a CONCURRENTLY index. Conservative: a mention is enough."""
    return _OUTSIDE.search(source) is not None


def first_line(query: str, limit: int = 120) -> str:
    line = " ".join(query.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
