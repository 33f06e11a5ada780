"""SQLite backups through its online backup API: a consistent snapshot taken while the
application writes, checked with PRAGMA integrity_check, and put back by replacing the file
whole (never while another connection writes it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import URL

from environments.core.backups.common import BackupError
from environments.core.backups.files import fsync, fsync_dir

# Seconds a restore waits for other SQLite connections to let go of the file.
SQLITE_BUSY_TIMEOUT = 5.0


# Pages per step of SQLite's backup API; between steps the deadline is checked.
SQLITE_STEP_PAGES = 1024


class _Timeout(Exception):
    pass


def path_of(target: URL) -> Path:
    database = target.database or ""
    if database.startswith("file:"):
        parts = urllib.parse.urlsplit(database)
        if "memory" in urllib.parse.parse_qs(parts.query).get("mode", []):
            database = ":memory:"
        else:
            database = urllib.parse.unquote(parts.path)
    if database in {"", ":memory:"}:
        raise BackupError(
            "An in-memory SQLite database cannot be backed up or restored: it lives only "
            "inside the process that opened it."
        )
    return Path(database).expanduser().absolute()


def _sqlite_uri(path: Path, **params: str) -> str:
    query = urllib.parse.urlencode(params)
    return "file:" + urllib.parse.quote(str(path.absolute())) + (f"?{query}" if query else "")


def backup(
    source: Path, partial: Path, *, deadline: float, timeout: float, emit: Callable[[str], None]
) -> None:
    """Copy with the online backup API: a consistent snapshot, taken without stopping writers.

    The source is opened read-only (mode=ro), so a typo in a path never creates an empty
    database. The backup restarts if another connection writes between steps; the deadline is
    checked between steps, so a busy database cannot hold the worker past its timeout.
    """
    emit(f"Copying {source} with SQLite's online backup API.")

    def progress(status: int, remaining: int, total: int) -> None:
        if time.monotonic() > deadline:
            raise _Timeout

    # A short busy timeout: a locked step returns to the loop, where the deadline is checked.
    busy = min(SQLITE_BUSY_TIMEOUT, timeout)
    try:
        src = sqlite3.connect(_sqlite_uri(source, mode="ro"), uri=True, timeout=busy)
    except sqlite3.Error as exc:
        raise BackupError(f"Cannot open the SQLite file {source}: {exc}.") from None
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst, pages=SQLITE_STEP_PAGES, progress=progress)
            pages = dst.execute("PRAGMA page_count").fetchone()[0]
        finally:
            dst.close()
    except _Timeout:
        raise BackupError(
            f"Copying {source} did not finish within {timeout:g} seconds and was stopped; "
            "no backup was kept."
        ) from None
    except sqlite3.Error as exc:
        raise BackupError(
            _sqlite_failure(f"Copying the SQLite file {source} failed", exc)
        ) from None
    finally:
        src.close()
    fsync(partial)
    emit(f"Copied {pages} pages.")


def verify(path: Path, *, shown_as: Path, deadline: float | None = None, timeout: float = 0) -> str:
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise BackupError(f"The backup file {shown_as} is not a SQLite database.")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    # The page count in the header is valid when the two change counters agree.
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] == header[92:96] and pages and size != pages * page_size:
        raise BackupError(
            f"The backup file {shown_as} is truncated or damaged: it has {size} bytes, its "
            f"header says {pages * page_size}."
        )
    if page_size < 512 or size % page_size:
        raise BackupError(
            f"The backup file {shown_as} is truncated or damaged: {size} bytes is not a whole "
            f"number of {page_size}-byte pages."
        )
    # immutable=1: read-only, no locks, and no -wal/-shm files created beside the backup.
    try:
        connection = sqlite3.connect(_sqlite_uri(path, immutable="1"), uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"Cannot open the backup file {shown_as}: {exc}.") from None
    if deadline is not None:
        # A non-zero answer interrupts the running statement (checked every 100k VM steps).
        connection.set_progress_handler(lambda: time.monotonic() > deadline, 100_000)
    try:
        problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        tables = connection.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
        ).fetchone()[0]
    except sqlite3.OperationalError as exc:
        if deadline is not None and time.monotonic() > deadline:
            raise BackupError(
                f"Checking the backup {shown_as} did not finish within {timeout:g} seconds."
            ) from None
        raise BackupError(f"The backup file {shown_as} is damaged: {exc}.") from None
    except sqlite3.Error as exc:
        raise BackupError(f"The backup file {shown_as} is damaged: {exc}.") from None
    finally:
        connection.close()
    if problems != ["ok"]:
        raise BackupError(
            f"The backup file {shown_as} failed SQLite's integrity check: "
            + "; ".join(problems[:3])
            + ("; …" if len(problems) > 3 else "")
        )
    noun = "table" if tables == 1 else "tables"
    return f"PRAGMA integrity_check returned ok for {tables} {noun} in {size // page_size} pages"


def restore(path: Path, target: Path, *, emit: Callable[[str], None]) -> None:
    """Swap a checked copy of the backup in for the target file, in one rename.

    Order matters. The old file's -wal is first checkpointed into it (and a hot -journal rolled
    back), so until the rename the old database is complete without its side files. Then the side
    files go: a -wal, -shm or -journal left beside the new file would belong to the old one, and
    SQLite would replay the old pages into the restored database on the next open. Then the
    rename, which is atomic: a crash leaves either the old database or the new one.

    A process that keeps the database open across the restore keeps reading the old, now
    unlinked, file; applications should be stopped or reconnect after a restore.
    """
    verified = verify(path, shown_as=path)
    emit(f"Backup checked: {verified}.")
    if not target.parent.is_dir():
        raise BackupError(f"The folder {target.parent} of the SQLite database does not exist.")
    existed = target.exists()
    if existed and not target.is_file():
        raise BackupError(f"{target} is not a file; Retort will not replace it.")
    if existed:
        _settle_sqlite(target, emit)
    try:
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.restore-")
        os.close(handle)
    except OSError as exc:
        raise BackupError(f"Cannot write next to {target}: {exc.strerror}.") from None
    swap = Path(name)
    try:
        shutil.copyfile(path, swap)
        if existed:
            _copy_ownership(target, swap)
        fsync(swap)
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{target}{suffix}").unlink()
        os.replace(swap, target)
        fsync_dir(target.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            swap.unlink()
        raise BackupError(f"Replacing {target} with the backup failed: {exc}.") from None
    emit(f"Restored {target} from {path.name}.")


def _settle_sqlite(target: Path, emit: Callable[[str], None]) -> None:
    """Fold the -wal into the file and make sure nobody is writing; refuse if they are."""
    try:
        connection = sqlite3.connect(
            _sqlite_uri(target, mode="rw"),
            uri=True,
            timeout=SQLITE_BUSY_TIMEOUT,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise BackupError(f"Cannot open {target} to replace it: {exc}.") from None
    try:
        # Reading takes a shared lock, which rolls back a hot journal left by a crash.
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            busy = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if busy:
                raise BackupError(_in_use(target))
        else:
            connection.execute("BEGIN EXCLUSIVE")
            connection.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise BackupError(_in_use(target)) from None
        raise BackupError(f"Cannot prepare {target} to be replaced: {exc}.") from None
    except sqlite3.DatabaseError as exc:
        # Not a database any more (the very case a restore is for): nothing to settle.
        emit(f"The current {target.name} is not a readable SQLite database ({exc}); replacing it.")
    finally:
        connection.close()


def _in_use(target: Path) -> str:
    return (
        f"The SQLite file {target} is in use: another connection kept it locked for "
        f"{SQLITE_BUSY_TIMEOUT:g} seconds. Stop the application's writers and restore again."
    )


def _sqlite_failure(prefix: str, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"{prefix}: the file is not a readable SQLite database ({text})."
    return f"{prefix}: {text}."


def _copy_ownership(old: Path, new: Path) -> None:
    """The restored file keeps the mode and owner of the one it replaces, where allowed."""
    status = old.stat()
    os.chmod(new, status.st_mode & 0o7777)
    with contextlib.suppress(PermissionError):
        os.chown(new, status.st_uid, status.st_gid)
