"""Back up a target database before Retort changes it, check the copy, and put it back.

PostgreSQL goes through the server's own tools: `pg_dump --format=custom` to write, `pg_restore`
to read and check, `pg_restore | psql` inside one transaction to put it back. SQLite goes through
its online backup API, which copies a consistent snapshot even while the application writes.

A backup is only worth something if it can be trusted on the bad day, so: a file is written under
a temporary name and renamed into place only once it has been read back successfully; its
SHA-256 is recorded so a later change to it is noticed before a restore touches the database; and
a restore either replaces the whole database or leaves it exactly as it was.

The password never reaches a command line (`ps` shows those to every local user), a log line or
an error message: it travels in the child's environment and every line is redacted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError

from environments.core.versions import Failure, classify, display_url, redact, redact_urls, sync_url

PG_DUMP = "pg_dump"
SQLITE = "sqlite"
KINDS = (PG_DUMP, SQLITE)
SUFFIXES = {PG_DUMP: ".dump", SQLITE: ".sqlite3"}

# Seconds libpq waits for a server to answer before giving up: an unreachable host should fail
# in seconds, not after the job's whole timeout.
CONNECT_TIMEOUT = 10
# Seconds a restore waits for other SQLite connections to let go of the file.
SQLITE_BUSY_TIMEOUT = 5.0
# Pages per step of SQLite's backup API; between steps the deadline is checked.
SQLITE_STEP_PAGES = 1024

# Query parameters of a PostgreSQL URL that libpq understands and that are safe to pass on as
# connection keywords. Anything else (driver options of SQLAlchemy, psycopg or asyncpg) would make
# libpq refuse the connection string, and `password` never goes on a command line.
_LIBPQ_KEYWORDS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "sslmode",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "gssencmode",
        "krbsrvname",
        "gsslib",
        "service",
        "target_session_attrs",
        "passfile",
    }
)

# Dropped, within the restore's transaction, before the archive is replayed. `pg_restore --clean`
# only drops what the archive contains, so a table, enum type or schema created by a migration
# after the backup would survive the restore, and the next `alembic upgrade` would then fail
# with "already exists". This removes what the restoring role owns in the user schemas: whole
# schemas other than `public` (whose owner and grants belong to the database), and in `public`
# the relations, routines and types; objects that belong to an extension are left to it. Large
# objects are unlinked as well; the archive brings back the ones it holds.
_RESTORE_PREAMBLE = b"""
-- Retort: remove what the backup does not hold, so the restore leaves exactly the backup.
SET client_min_messages = warning;
DO $retort$
DECLARE
    statement text;
BEGIN
    FOREACH statement IN ARRAY ARRAY(
        SELECT format('DROP SCHEMA IF EXISTS %I CASCADE', n.nspname)
        FROM pg_catalog.pg_namespace n
        WHERE n.nspname <> 'public' AND n.nspname <> 'information_schema'
          AND n.nspname !~ '^pg_'
          AND pg_catalog.pg_has_role(n.nspowner, 'MEMBER')
          AND NOT EXISTS (
              SELECT 1 FROM pg_catalog.pg_depend d
              WHERE d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                AND d.objid = n.oid AND d.deptype = 'e')
        ORDER BY n.nspname
    ) || ARRAY(
        SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
                      CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                     WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                                     ELSE 'TABLE' END,
                      n.nspname, c.relname)
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')
          AND pg_catalog.pg_has_role(c.relowner, 'MEMBER')
          AND NOT EXISTS (
              SELECT 1 FROM pg_catalog.pg_depend d
              WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY c.relkind = 'S', c.relname
    ) || ARRAY(
        SELECT format('DROP %s IF EXISTS %I.%I(%s) CASCADE',
                      CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
                                     ELSE 'FUNCTION' END,
                      n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid))
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public'
          AND pg_catalog.pg_has_role(p.proowner, 'MEMBER')
          AND NOT EXISTS (
              SELECT 1 FROM pg_catalog.pg_depend d
              WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                AND d.objid = p.oid AND d.deptype = 'e')
        ORDER BY p.proname
    ) || ARRAY(
        SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
                      CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                      n.nspname, t.typname)
        FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
        WHERE n.nspname = 'public'
          AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND c.relkind = 'c'))
          AND pg_catalog.pg_has_role(t.typowner, 'MEMBER')
          AND NOT EXISTS (
              SELECT 1 FROM pg_catalog.pg_depend d
              WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
                AND d.objid = t.oid AND d.deptype = 'e')
        ORDER BY t.typname
    ) || ARRAY(
        SELECT format('SELECT pg_catalog.lo_unlink(%s)', m.oid)
        FROM pg_catalog.pg_largeobject_metadata m
        WHERE pg_catalog.pg_has_role(m.lomowner, 'MEMBER')
    )
    LOOP
        EXECUTE statement;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'public') THEN
        CREATE SCHEMA public;
    END IF;
END
$retort$;
"""

# pg_restore writes COMMIT as (nearly) the last thing of its script. Holding back this many
# bytes until pg_restore has exited cleanly means psql never sees a COMMIT for a half-read
# archive: the connection closes inside the open transaction and PostgreSQL rolls it back.
_HOLD_BACK = 64 * 1024
# Printed by psql right before and right after it runs that COMMIT.
_COMMITTING = "retort: committing"
_COMMITTED = "retort: committed"
_MARKED_COMMIT = f"SELECT '{_COMMITTING}';\nCOMMIT;\nSELECT '{_COMMITTED}';\n".encode()


@dataclass(frozen=True)
class BackupResult:
    """A backup that was written, read back, and fingerprinted."""

    path: Path
    size: int
    sha256: str
    kind: str
    verified: str
    duration_s: float


class BackupError(Exception):
    """A sentence saying what failed, never containing the password."""


# --- public API ----------------------------------------------------------------------------


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
    _check_name(name)
    emit = _emitter(url, on_line)
    source = _sqlite_path(target) if kind == SQLITE else None
    if source is not None and not source.is_file():
        what = "is not a file" if source.exists() else "does not exist"
        raise BackupError(f"The SQLite file {source} {what}; there is nothing to back up.")

    dest_dir = Path(dest_dir)
    final = dest_dir / f"{name}{SUFFIXES[kind]}"
    partial = _partial_file(dest_dir, final)
    try:
        if source is not None:
            _sqlite_backup(source, partial, deadline=deadline, timeout=timeout, emit=emit)
        else:
            _pg_dump(target, url, partial, deadline=deadline, timeout=timeout, emit=emit)
        # pg_dump exited 0, so the archive is complete; --list proves it is one (the full read
        # and the SHA-256 check happen before any restore, where a damaged file would matter).
        verified = _verify(
            partial, kind, deadline=deadline, timeout=timeout, shown_as=final, full=False
        )
        emit(f"Verified: {verified}.")
        size, digest = _size_and_sha256(partial)
        _publish(partial, final)
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
        _, digest = _size_and_sha256(path)
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
) -> None:
    """Replace the database's contents with the backup, entirely or not at all.

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
    emit = _emitter(url, on_line)
    target = sync_url(url)
    if kind == SQLITE:
        _sqlite_restore(path, _sqlite_path(target), emit=emit)
    else:
        _pg_restore(target, url, path, deadline=deadline, timeout=timeout, emit=emit)


# --- PostgreSQL ----------------------------------------------------------------------------

_DIALECT_NAMES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


def _pg_dump(
    target: URL,
    url: str,
    partial: Path,
    *,
    deadline: float,
    timeout: float,
    emit: Callable[[str], None],
) -> None:
    # --format=custom is compressed, and pg_restore can list, check and select from it. No
    # --no-owner here: pg_dump ignores it for archive formats; ownership is recorded in the
    # archive (useful to a DBA restoring by hand) and dropped at restore time instead.
    argv = [
        "pg_dump",
        "--format=custom",
        "--verbose",
        "--no-password",
        f"--file={partial}",
        f"--dbname={_conninfo(target)}",
    ]
    emit(f"Running pg_dump of {display_url(url)}.")
    group = _Processes(emit, deadline, url=url)
    with group:
        group.start(argv, env=_pg_env(target), label="pg_dump")
        group.pump()
    dump = group.results["pg_dump"]
    if group.timed_out:
        raise BackupError(
            f"pg_dump did not finish within {timeout:g} seconds and was stopped; "
            "no backup was kept."
        )
    if dump.exit_code != 0:
        raise BackupError(_pg_failure("pg_dump", dump, target, url, dest=partial.parent))


def _pg_restore(
    target: URL,
    url: str,
    path: Path,
    *,
    deadline: float,
    timeout: float,
    emit: Callable[[str], None],
) -> None:
    """`pg_restore` writes the script, psql runs it in the transaction pg_restore opens.

    `pg_restore -d` cannot run anything of ours in its transaction, and the objects created since
    the backup must go in that same transaction; so the script passes through this process,
    which inserts the preamble after BEGIN and holds back the end (with its COMMIT) until
    pg_restore has read the whole archive. psql stops at the first error (ON_ERROR_STOP,
    which is what pg_restore's --exit-on-error would be); leaving the transaction open when
    it stops makes PostgreSQL roll it back. Two SELECTs around the COMMIT print how far psql got,
    so a stopped restore can say whether the database was left as it was.
    """
    entries = _pg_list_entries(path, deadline=deadline, timeout=timeout)
    emit(f"Restoring {entries} archive entries from {path.name} into {display_url(url)}.")
    # --clean --if-exists drops every object of the archive before creating it again, including
    # kinds the preamble leaves alone (casts, collations, publications); --no-owner creates
    # everything as the restoring role, which need not be able to act as the original owners;
    # --single-transaction makes the script one BEGIN ... COMMIT, with no inner COMMIT of its
    # own (it would otherwise commit around large objects).
    restore_argv = [
        "pg_restore",
        "--clean",
        "--if-exists",
        "--no-owner",
        "--single-transaction",
        "--verbose",
        "--file=-",
        str(path),
    ]
    psql_argv = [
        "psql",
        "--no-psqlrc",
        "--no-password",
        "--quiet",
        "--tuples-only",
        "--no-align",
        "--set=ON_ERROR_STOP=1",
        f"--dbname={_conninfo(target)}",
        "--file=-",
    ]
    group = _Processes(emit, deadline, url=url)
    state = {"began": False, "marked": False, "sent": False}
    with group:
        # pg_restore reads a file and writes a script; it needs no password.
        restore = group.start(restore_argv, env=_pg_env(None), label="pg_restore", stdout="pipe")
        apply = group.start(
            psql_argv, env=_pg_env(target), label="psql", stdin=True, stdout="capture"
        )
        group.add_worker(lambda: _relay(restore, apply, group, state))
        group.pump()
    restored, applied = group.results["pg_restore"], group.results["psql"]
    where = display_url(url)
    # psql prints the markers as it runs the statements around COMMIT, so they tell exactly how
    # far it got, even when it was killed: a line written into its input proves nothing.
    printed = applied.stdout.splitlines()
    # Without markers (a script of another shape) psql's exit code has to do.
    unmarked = state["sent"] and not state["marked"]
    if _COMMITTED in printed or (unmarked and applied.exit_code == 0):
        emit(f"Restored {where} from {path.name}.")
        return
    if not applied.error_lines and (_COMMITTING in printed or unmarked):
        raise BackupError(
            f"Restoring {where} from {path.name} was interrupted during its final COMMIT; "
            "whether the database now holds the backup is unknown. Check it before going on."
        )
    if group.timed_out:
        raise BackupError(
            f"Restoring {where} did not finish within {timeout:g} seconds and was stopped; its "
            "transaction was rolled back and the database is as it was."
        )
    if applied.error_lines:
        detail = _detail(applied)
        if any(marker in detail.lower() for marker in _CONNECTING_MARKERS):
            failed = _pg_failure("psql", applied, target, url)
            raise BackupError(f"Could not restore {where}: {failed} Nothing was changed.")
        reason = f"The restore stopped at an error: {detail}"
    else:
        # psql was stopped on purpose because pg_restore could not go on.
        reason = f"pg_restore could not read {path.name} to the end: {_detail(restored)}"
    raise BackupError(
        f"Restoring {where} from {path.name} failed and was rolled back; the database is as it "
        f"was. {reason}"
    )


def _relay(
    restore: subprocess.Popen, apply: subprocess.Popen, group: _Processes, state: dict[str, bool]
) -> None:
    """Copy pg_restore's script into psql, with the preamble after BEGIN and COMMIT held back."""
    source, sink = restore.stdout, apply.stdin
    assert source is not None and sink is not None
    pending = bytearray()
    try:
        for line in iter(source.readline, b""):
            sink.write(line)
            if line.strip() == b"BEGIN;":
                sink.write(_RESTORE_PREAMBLE)
                sink.flush()
                state["began"] = True
                break
        if state["began"]:
            while chunk := source.read1(1 << 16):
                pending += chunk
                if len(pending) > _HOLD_BACK:
                    sink.write(pending[:-_HOLD_BACK])
                    del pending[:-_HOLD_BACK]
        else:
            source.read()
        finished = restore.wait()
        if state["began"] and finished == 0 and not group.timed_out:
            # pg_restore's COMMIT is its last statement; any earlier "COMMIT;" line is table data.
            at = pending.rfind(b"\nCOMMIT;\n")
            if at >= 0:
                pending[at + 1 : at + 9] = _MARKED_COMMIT
                state["marked"] = True
            sink.write(pending)
            sink.close()
            state["sent"] = True
        else:
            # Stop psql inside the open transaction: PostgreSQL rolls it back when the
            # connection drops, and psql never reads another statement.
            group.kill(apply)
    except OSError:
        # psql stopped reading: it hit an error or lost its connection. pg_restore is no use now.
        group.kill(restore)
    finally:
        with contextlib.suppress(OSError):
            sink.close()


def _pg_list_entries(
    path: Path, *, deadline: float, timeout: float, shown_as: Path | None = None
) -> int:
    """How many objects the archive's table of contents lists.

    A dump of an empty database lists none, and is still a good backup (the one taken before a
    fresh database's first upgrade); what must be there is pg_dump's header with its count of
    TOC entries, which always includes the encoding and search_path settings.
    """
    group = _Processes(lambda line: None, deadline)
    with group:
        group.start(
            ["pg_restore", "--list", str(path)], env=_pg_env(None), label="list", stdout="capture"
        )
        group.pump()
    listed = group.results["list"]
    path = shown_as or path
    if group.timed_out:
        raise BackupError(f"pg_restore --list {path.name} did not finish within {timeout:g} s.")
    if listed.exit_code != 0:
        detail = _detail(listed) or f"exit code {listed.exit_code}"
        raise BackupError(f"The backup file {path} is not a readable pg_dump archive: {detail}")
    header = re.search(r"^;\s+TOC Entries: (\d+)\s*$", listed.stdout, re.MULTILINE)
    if header is None or int(header.group(1)) < 1:
        raise BackupError(f"The backup file {path} has no table of contents; it is not a backup.")
    return sum(
        1 for line in listed.stdout.splitlines() if line.strip() and not line.startswith(";")
    )


def _verify_pg_dump(
    path: Path, *, deadline: float, timeout: float, shown_as: Path, full: bool = True
) -> str:
    # --list only reads the table of contents at the start of the file; a truncated or damaged
    # data section passes it. Reading the whole archive (into /dev/null) is what catches those.
    entries = _pg_list_entries(path, deadline=deadline, timeout=timeout, shown_as=shown_as)
    empty = " (an empty database)" if entries == 0 else ""
    if not full:
        return f"pg_restore --list read {entries} entries{empty}"
    group = _Processes(lambda line: None, deadline)
    with group:
        group.start(
            ["pg_restore", f"--file={os.devnull}", str(path)], env=_pg_env(None), label="read"
        )
        group.pump()
    read = group.results["read"]
    if group.timed_out:
        raise BackupError(f"Reading the backup {shown_as} did not finish within {timeout:g} s.")
    if read.exit_code != 0:
        detail = _detail(read) or f"exit code {read.exit_code}"
        raise BackupError(
            f"The backup file {shown_as} is damaged or truncated; pg_restore could not read it "
            f"to the end: {detail}"
        )
    return f"pg_restore --list read {entries} entries{empty} and pg_restore read the whole archive"


def _conninfo(target: URL) -> str:
    """A libpq connection string for `--dbname`: everything but the password."""
    params: dict[str, str] = {}
    for key, value in target.query.items():
        if key in _LIBPQ_KEYWORDS:
            params[key] = value if isinstance(value, str) else ",".join(value)
    if target.host:
        params["host"] = target.host
    if target.port:
        params["port"] = str(target.port)
    if target.username:
        params["user"] = target.username
    if target.database:
        params["dbname"] = target.database
    return " ".join(f"{key}={_quote_conninfo(value)}" for key, value in params.items())


def _quote_conninfo(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _pg_env(target: URL | None) -> dict[str, str]:
    """The child's environment: the URL alone decides where it connects and as whom.

    libpq reads PGHOST, PGUSER, PGPASSWORD and friends; inherited from the worker (which may have
    them for its own database) they could silently point a backup elsewhere or send one
    database's password to another server. The password goes in PGPASSWORD: not on the command
    line, which `ps` shows to everyone, and not in a file that a killed worker leaves behind.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = str(CONNECT_TIMEOUT)
    env["PGAPPNAME"] = "retort-backup"
    if target is not None and target.password is not None:
        env["PGPASSWORD"] = str(target.password)
    return env


def _pg_failure(
    tool: str, result: _Result, target: URL, url: str, *, dest: Path | None = None
) -> str:
    """One sentence for a failed pg_dump, pg_restore or psql, from its error lines."""
    detail = _detail(result) or f"{tool} exited with code {result.exit_code} and said nothing"
    query_host = target.query.get("host")
    query_host = (
        query_host if isinstance(query_host, str) or query_host is None else ",".join(query_host)
    )
    host = target.host or query_host or "the default host"
    where = f"{host}:{target.port or 5432}"
    lowered = detail.lower()
    if "server version mismatch" in lowered:
        return (
            f"The {tool} installed on the worker is older than the PostgreSQL server at {where}; "
            f"install the client tools of the server's version: {detail}"
        )
    if any(marker in lowered for marker in _CONNECTING_MARKERS):
        if re.search(r'database "[^"]*" does not exist', detail):
            return (
                f"The database {target.database} does not exist on the PostgreSQL server at "
                f"{where}."
            )
        kind, _ = classify(Exception(detail))
        if kind is Failure.AUTH_FAILED:
            user = target.username or "(default user)"
            return f"The PostgreSQL server at {where} refused the login of user {user}: {detail}"
        return f"Cannot reach the PostgreSQL server at {where}: {detail}"
    if dest is not None and ("output file" in lowered or "no space left" in lowered):
        return f"Writing the backup into {dest} failed: {detail}"
    return f"{tool} failed with exit code {result.exit_code}: {detail}"


# Words of libpq's messages for a connection that was never made (as opposed to a statement
# that failed on a working connection, whose "role ... does not exist" is not a login problem).
_CONNECTING_MARKERS = (
    "connection to server",
    "could not connect",
    "could not translate host name",
    "timeout expired",
)


def _detail(result: _Result) -> str:
    """The error in one line, without the tool's prefix or psql's script position."""
    lines = result.error_lines or result.lines[-3:]
    text = " ".join(" ".join(line.split()) for line in lines[:6])
    return _TOOL_PREFIX.sub("", text, count=1)


_TOOL_PREFIX = re.compile(
    r"^(?:pg_dump: error: |pg_restore: error: |psql: error: |psql:[^:]*:\d+: )"
)


# --- SQLite --------------------------------------------------------------------------------


def _sqlite_path(target: URL) -> Path:
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


def _sqlite_backup(
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
    _fsync(partial)
    emit(f"Copied {pages} pages.")


def _verify_sqlite(
    path: Path, *, shown_as: Path, deadline: float | None = None, timeout: float = 0
) -> str:
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


def _sqlite_restore(path: Path, target: Path, *, emit: Callable[[str], None]) -> None:
    """Swap a checked copy of the backup in for the target file, in one rename.

    Order matters. The old file's -wal is first checkpointed into it (and a hot -journal rolled
    back), so until the rename the old database is complete without its side files. Then the side
    files go: a -wal, -shm or -journal left beside the new file would belong to the old one, and
    SQLite would replay the old pages into the restored database on the next open. Then the
    rename, which is atomic: a crash leaves either the old database or the new one.

    A process that keeps the database open across the restore keeps reading the old, now
    unlinked, file; applications should be stopped or reconnect after a restore.
    """
    verified = _verify_sqlite(path, shown_as=path)
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
        _fsync(swap)
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{target}{suffix}").unlink()
        os.replace(swap, target)
        _fsync_dir(target.parent)
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


# --- files ---------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise BackupError(
            f"A backup name must be a plain file name without folders; {name!r} is not."
        )


def _partial_file(dest_dir: Path, final: Path) -> Path:
    """An empty 0600 file beside `final`, named so no one takes it for a finished backup."""
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"Cannot create the backup folder {dest_dir}: {exc.strerror}.") from None
    if final.exists():
        raise BackupError(
            f"A backup named {final.name} already exists in {dest_dir}; Retort never overwrites "
            "a backup."
        )
    try:
        handle, name = tempfile.mkstemp(dir=dest_dir, prefix=f".{final.name}.", suffix=".partial")
    except OSError as exc:
        raise BackupError(
            f"Cannot write into the backup folder {dest_dir}: {exc.strerror}."
        ) from None
    os.close(handle)
    return Path(name)


def _publish(partial: Path, final: Path) -> None:
    """Give the checked file its final name, never replacing a file that appeared meanwhile."""
    _fsync(partial)
    try:
        os.link(partial, final)
    except FileExistsError:
        raise BackupError(
            f"A backup named {final.name} appeared in {final.parent} while this one was being "
            "written; Retort never overwrites a backup."
        ) from None
    except OSError:  # a filesystem without hard links
        if final.exists():
            raise BackupError(f"A backup named {final.name} already exists.") from None
        os.replace(partial, final)
    else:
        partial.unlink()
    _fsync_dir(final.parent)


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
        return _verify_pg_dump(path, deadline=deadline, timeout=timeout, shown_as=shown, full=full)
    return _verify_sqlite(path, shown_as=shown, deadline=deadline, timeout=timeout)


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: it lives in the directory, not in the file."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


# --- child processes -----------------------------------------------------------------------


class _Timeout(Exception):
    pass


@dataclass
class _Result:
    exit_code: int | None = None
    lines: list[str] = field(default_factory=list)
    stdout: str = ""

    @property
    def error_lines(self) -> list[str]:
        """The lines from the first error on: the error and its DETAIL/HINT."""
        lines = self.lines
        for index, line in enumerate(lines):
            lowered = line.lower()
            if "error:" in lowered or "fatal:" in lowered:
                return lines[index:]
        return []


def _emitter(url: str, on_line: Callable[[str], None] | None) -> Callable[[str], None]:
    def emit(line: str) -> None:
        if on_line is not None:
            on_line(redact_urls(redact(line, url)))

    return emit


class _Processes:
    """Child processes run together: their stderr lines reach `emit` on the caller's thread
    (where the worker may write them to its database), and a deadline kills every process
    group, so nothing a tool started outlives a timeout."""

    def __init__(
        self, emit: Callable[[str], None], deadline: float, *, url: str | None = None
    ) -> None:
        self.emit = emit
        self.deadline = deadline
        self.url = url
        self.results: dict[str, _Result] = {}
        self.timed_out = False
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._processes: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._stdout: dict[str, list[bytes]] = {}

    def __enter__(self) -> _Processes:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        # On an exception in between (a failed start, an interrupt) nothing is left running.
        if exc_type is not None:
            for process in self._processes.values():
                self.kill(process)
        for thread in self._threads:
            thread.join()
        for label, process in self._processes.items():
            try:
                process.wait(timeout=max(self.deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:  # closed its output but never exited
                self.timed_out = True
                self.kill(process)
                process.wait()
            result = self.results[label]
            result.exit_code = process.returncode
            result.stdout = b"".join(self._stdout.get(label, [])).decode("utf-8", "replace")
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()

    def start(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        label: str,
        stdout: Literal["discard", "capture", "pipe"] = "discard",
        stdin: bool = False,
    ) -> subprocess.Popen:
        """Start `argv` in its own session; `stdout="pipe"` leaves reading it to the caller."""
        try:
            process = subprocess.Popen(
                list(argv),
                env=env,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if stdout == "discard" else subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise BackupError(
                f"{argv[0]} is not installed on the worker (not found on its PATH); install the "
                "PostgreSQL client tools of the server's version (Debian: postgresql-client)."
            ) from None
        except OSError as exc:
            raise BackupError(f"Could not start {argv[0]}: {exc.strerror}.") from None
        self._processes[label] = process
        self.results[label] = _Result()
        stderr, out = process.stderr, process.stdout
        assert stderr is not None
        self._add_thread(lambda: self._read_lines(label, stderr))
        if stdout == "capture":
            assert out is not None
            chunks = self._stdout.setdefault(label, [])
            self._add_thread(lambda: chunks.extend(iter(out.read1, b"")))
        return process

    def add_worker(self, work: Callable[[], None]) -> None:
        """Run `work` beside the processes; pump() waits for it like for a reader."""
        self._add_thread(work)

    def _add_thread(self, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            finally:
                self._queue.put(None)

        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _read_lines(self, label: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self._queue.put((label, redact_urls(redact(line, self.url))))

    def pump(self) -> None:
        """Pass lines on until every reader is done; at the deadline, kill everything."""
        running = len(self._threads)
        while running:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 and not self.timed_out:
                self.timed_out = True
                for process in self._processes.values():
                    self.kill(process)
            try:
                item = self._queue.get(timeout=max(remaining, 0.05) if not self.timed_out else 1)
            except queue.Empty:
                continue
            if item is None:
                running -= 1
                continue
            label, line = item
            self.results[label].lines.append(line)
            self.emit(line)

    def kill(self, process: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
