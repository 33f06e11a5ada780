"""What every part of the backups shares: the kinds of backup, their file suffixes, and the
one error they raise."""

from __future__ import annotations

from collections.abc import Callable

from environments.core.processes import scrub

PG_DUMP = "pg_dump"


SQLITE = "sqlite"


KINDS = (PG_DUMP, SQLITE)


SUFFIXES = {PG_DUMP: ".dump", SQLITE: ".sqlite3"}


class BackupError(Exception):
    """A sentence saying what failed, never containing the password."""


def emitter(url: str, on_line: Callable[[str], None] | None) -> Callable[[str], None]:
    """`on_line`, given every line redacted of the URL's password (and of any URL's)."""

    def emit(line: str) -> None:
        if on_line is not None:
            on_line(scrub(line, url))

    return emit


def start_error(program: str, reason: str) -> BackupError:
    """A tool that could not be started, said with what to install."""
    if reason == "not found":
        return BackupError(
            f"{program} is not installed on the worker (not found on its PATH); install the "
            "PostgreSQL client tools of the server's version (Debian: postgresql-client)."
        )
    return BackupError(f"Could not start {program}: {reason}.")
