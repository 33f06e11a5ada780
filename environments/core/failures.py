"""What a failed alembic run says, found in its output: the cause and the revision it was in.

alembic prints a traceback when a migration fails; the line a person needs ("table audit_notes
already exists") is its last exception line, or alembic's own `FAILED: …` line for the errors
it explains itself. The revision it was in is the last `Running upgrade A -> B` line.

No Django here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from environments.core.plan import RUNNING

# `sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) table x already exists`,
# `psycopg2.errors.DuplicateTable: relation "x" already exists`, `ValueError: …`
_EXCEPTION = re.compile(
    r"^(?:(?:[a-z_]\w*\.)+([A-Z]\w*)|([A-Z]\w*(?:Error|Exception|Exit|Warning|Failure)))"
    r": (.+)$"
)
_FAILED = re.compile(r"^FAILED: (.+)$")
_DRIVER_PREFIX = re.compile(r"^\((?:[\w.]+)\) ")  # "(psycopg2.errors.DuplicateTable) "


@dataclass(frozen=True)
class RunFailure:
    cause: str  # one line, as the database or alembic said it
    revision: str | None  # the revision being applied when it failed, if any had started
    step: int  # which step of the plan that was, from 1 (0: before any)


def read_failure(output: str, revisions: list[str]) -> RunFailure:
    """The cause and the failing step of a run whose output is `output`."""
    cause = None
    current, step = None, 0
    for raw in output.splitlines():
        line = raw.strip()
        started = RUNNING.search(line)
        if started is not None:
            kind, before, after = started.groups()
            # an upgrade works on the revision it arrives at, a downgrade on the one it leaves
            current = before.split(",")[0].strip() if kind == "downgrade" else after
            step += 1
            continue
        failed = _FAILED.match(line)
        if failed:
            cause = failed.group(1)
            continue
        exception = _EXCEPTION.match(line)
        if exception:
            cause = _DRIVER_PREFIX.sub("", exception.group(3))
    if current is not None and current in revisions:
        step = revisions.index(current) + 1
    return RunFailure(cause or "", current, step)


def describe(
    failure: RunFailure,
    *,
    exit_code: int,
    planned: int,
    heads: tuple[str, ...],
    unreadable: str | None,
    rolls_back: bool,
    backup_id: int | None,
) -> str:
    """The failure as a person needs it: the cause first, where it happened, what state the
    database is in now, and what to do next. `rolls_back`: the database undid the failed
    revision's statements with its transaction (PostgreSQL's transactional DDL)."""
    cause = failure.cause or f"alembic exited with code {exit_code}"
    where = (
        f" — in revision {failure.revision} ({failure.step} of {planned})"
        if (failure.revision)
        else ""
    )
    state = state_now(failure, heads=heads, unreadable=unreadable, rolls_back=rolls_back)
    undo = f", restore backup #{backup_id} taken before the run" if backup_id else ""
    return (
        f"{cause}{where}.{state} Next: fix the revision and plan the job again{undo}, or stamp "
        "the version table if the change is already in the database."
    )


def state_now(
    failure: RunFailure, *, heads: tuple[str, ...], unreadable: str | None, rolls_back: bool
) -> str:
    """What the database holds after a failed run, and what became of the failed revision
    (a sentence with a leading space)."""
    if unreadable:
        state = f" {unreadable}"
    else:
        state = f" The database holds {', '.join(heads) or 'nothing'} now"
        if failure.revision and failure.revision not in heads:
            if rolls_back:
                state += (
                    f"; nothing of {failure.revision} was committed (PostgreSQL rolled it back)."
                )
            else:
                state += (
                    f"; {failure.revision} is not recorded as applied, but on this database some "
                    "of its statements may have run: check before trying again."
                )
        else:
            state += "."
    return state
