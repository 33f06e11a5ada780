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
