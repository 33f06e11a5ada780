"""Back up a target database before Retort changes it, check the copy, and put it back.

PostgreSQL goes through the server's own tools (`postgres.py`): `pg_dump --format=custom` to
write, `pg_restore` to read and check, `pg_restore | psql` inside one transaction to put it
back. SQLite goes through its online backup API (`sqlite.py`), which copies a consistent
snapshot even while the application writes.

A backup is only worth something if it can be trusted on the bad day, so (`files.py`): a file is
written under a temporary name and renamed into place only once it has been read back
successfully; its SHA-256 is recorded so a later change to it is noticed before a restore touches
the database; and a restore either replaces the whole database or leaves it exactly as it was.

The password never reaches a command line (`ps` shows those to every local user), a log line or
an error message: it travels in the child's environment and every line is redacted.
"""

from environments.core.backups.api import (
    BackupResult,
    backup_database,
    dialect_of,
    restore_database,
    verify_backup,
)
from environments.core.backups.common import KINDS, PG_DUMP, SQLITE, SUFFIXES, BackupError
from environments.core.backups.files import remove_partials

__all__ = [
    "KINDS",
    "PG_DUMP",
    "SQLITE",
    "SUFFIXES",
    "BackupError",
    "BackupResult",
    "backup_database",
    "dialect_of",
    "remove_partials",
    "restore_database",
    "verify_backup",
]
