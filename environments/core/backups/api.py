"""Back up a target database, check a backup, put one back: the entry points, which hand the
work to `postgres.py` or `sqlite.py` and the files to `files.py`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import ArgumentError

from environments.core.backups.common import KINDS, PG_DUMP, SQLITE, SUFFIXES, BackupError, emitter
from environments.core.backups.files import check_name, partial_file, publish, size_and_sha256
from environments.core.backups.postgres import dump as pg_dump
from environments.core.backups.postgres import restore as pg_restore
from environments.core.backups.postgres import verify as pg_verify
from environments.core.backups.sqlite import backup as sqlite_backup
from environments.core.backups.sqlite import path_of as sqlite_path
from environments.core.backups.sqlite import restore as sqlite_restore
from environments.core.backups.sqlite import verify as sqlite_verify
from environments.core.database_urls import sync_url


@dataclass(frozen=True)
class BackupResult:
    """A backup that was written, read back, and fingerprinted."""

    path: Path
    size: int
    sha256: str
    kind: str
    verified: str
    duration_s: float


_DIALECT_NAMES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


def dialect_of(url: str) -> str:
    """The kind of database behind a URL, whatever driver the application's config names."""
    try:
        backend = sync_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        raise BackupError(
            "The database URL is not valid; expected dialect+driver://user@host/database."
        ) from None
    if backend in {"postgresql", "sqlite"}:
        return backend
    raise BackupError(
        f"Backups are supported for PostgreSQL and SQLite; this database is {backend}."
    )


def backup_database(
    url: str,
    dest_dir: Path,
    *,
    name: str,
    timeout: float = 3600,
    on_line: Callable[[str], None] | None = None,
    schema: str | None = None,
) -> BackupResult:
    """Write `dest_dir/<name>.dump` (PostgreSQL) or `<name>.sqlite3` (SQLite) and check it.

    The file appears under its final name only after it was checked; a failed or
    stopped backup leaves nothing behind that could be mistaken for a good one. An existing
    backup of the same name is never overwritten. Backups hold every row of the database, so
    they are created readable by their owner only (0600).
    """
    started = time.monotonic()
    deadline = started + timeout
    dialect = dialect_of(url)
    target = sync_url(url)
    kind = PG_DUMP if dialect == "postgresql" else SQLITE
    check_name(name)
    emit = emitter(url, on_line)
    source = sqlite_path(target) if kind == SQLITE else None
    if source is not None and not source.is_file():
        what = "is not a file" if source.exists() else "does not exist"
        raise BackupError(f"The SQLite file {source} {what}; there is nothing to back up.")

    dest_dir = Path(dest_dir)
    final = dest_dir / f"{name}{SUFFIXES[kind]}"
    partial = partial_file(dest_dir, final)
    try:
        if source is not None:
            sqlite_backup(source, partial, deadline=deadline, timeout=timeout, emit=emit)
        else:
            pg_dump(
                target, url, partial, deadline=deadline, timeout=timeout, emit=emit, schema=schema
            )
        # pg_dump exited 0, so the archive is complete; --list proves it is one (the full read
        # and the SHA-256 check happen before any restore, where a damaged file would matter).
        verified = _verify(
            partial, kind, deadline=deadline, timeout=timeout, shown_as=final, full=False
        )
        emit(f"Verified: {verified}.")
        size, digest = size_and_sha256(partial)
        publish(partial, final)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    # the file name only: a job's log is shown on its page, and the folder is the server's
    emit(f"Backup written to {final.name} ({size} bytes, SHA-256 {digest}).")
    return BackupResult(
        path=final,
        size=size,
        sha256=digest,
        kind=kind,
        verified=verified,
        duration_s=time.monotonic() - started,
    )


def verify_backup(
    path: Path, kind: str, *, expected_sha256: str | None = None, timeout: float = 3600
) -> str:
    """Check that a backup can be read in full, and is the file that was written.

    With `expected_sha256` (the digest recorded at backup time) a file changed in any byte since
    is refused, which catches what no structural check can, such as one changed value.
    """
    path = Path(path)
    if kind not in KINDS:
        raise BackupError(f"Unknown backup kind {kind!r}; expected one of {', '.join(KINDS)}.")
    if not path.is_file():
        raise BackupError(f"The backup file {path} does not exist.")
    if expected_sha256 is not None:
        _, digest = size_and_sha256(path)
        if digest != expected_sha256.strip().lower():
            raise BackupError(
                f"The backup file {path} is not the file that was written: its SHA-256 is "
                f"{digest}, the backup recorded {expected_sha256}. It was changed or damaged "
                "since, so Retort refuses to use it."
            )
    return _verify(path, kind, deadline=time.monotonic() + timeout, timeout=timeout)


def restore_database(
    url: str,
    path: Path,
    kind: str,
    *,
    timeout: float = 3600,
    on_line: Callable[[str], None] | None = None,
    schema: str | None = None,
) -> None:
    """Replace the database's contents (a schema tenant's: its schema's) with the backup,
    entirely or not at all.

    Call `verify_backup(path, kind, expected_sha256=...)` first: this function checks the file
    can be read, not that it is the one that was recorded.
    """
    deadline = time.monotonic() + timeout
    dialect = dialect_of(url)
    expected_kind = PG_DUMP if dialect == "postgresql" else SQLITE
    if kind != expected_kind:
        raise BackupError(
            f"A {kind} backup cannot be restored into a {_DIALECT_NAMES[dialect]} database."
        )
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"The backup file {path} does not exist.")
    emit = emitter(url, on_line)
    target = sync_url(url)
    if kind == SQLITE:
        sqlite_restore(path, sqlite_path(target), emit=emit)
    else:
        pg_restore(target, url, path, deadline=deadline, timeout=timeout, emit=emit, schema=schema)


def _verify(
    path: Path,
    kind: str,
    *,
    deadline: float,
    timeout: float,
    shown_as: Path | None = None,
    full: bool = True,
) -> str:
    shown = shown_as or path
    if kind == PG_DUMP:
        return pg_verify(path, deadline=deadline, timeout=timeout, shown_as=shown, full=full)
    return sqlite_verify(path, shown_as=shown, deadline=deadline, timeout=timeout)
