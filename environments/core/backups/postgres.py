"""PostgreSQL backups through the server's own tools: `pg_dump --format=custom` writes,
`pg_restore --list` and a full read check, `pg_restore | psql` inside one transaction puts a
backup back (or leaves the database exactly as it was). The password travels in PGPASSWORD,
never on a command line; the children are started by `core/processes.py`."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import URL

from environments.core.backups.common import BackupError, start_error
from environments.core.database_urls import display_url
from environments.core.processes import ProcessGroup, ProcessResult, StartError
from environments.core.tenants import quoted
from environments.core.versions import Failure, classify

# Seconds libpq waits for a server to answer before giving up: an unreachable host should fail
# in seconds, not after the job's whole timeout.
CONNECT_TIMEOUT = 10


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
_RESTORE_PREAMBLE = (Path(__file__).parent / "restore_preamble.sql").read_bytes()


# pg_restore writes COMMIT as (nearly) the last thing of its script. Holding back this many
# bytes until pg_restore has exited cleanly means psql never sees a COMMIT for a half-read
# archive: the connection closes inside the open transaction and PostgreSQL rolls it back.
_HOLD_BACK = 64 * 1024


# Printed by psql right before and right after it runs that COMMIT.
_COMMITTING = "retort: committing"


_COMMITTED = "retort: committed"


_MARKED_COMMIT = f"SELECT '{_COMMITTING}';\nCOMMIT;\nSELECT '{_COMMITTED}';\n".encode()


def _start(group: ProcessGroup, argv: list[str], **options) -> subprocess.Popen:
    try:
        return group.start(argv, **options)
    except StartError as exc:
        raise start_error(exc.program, exc.reason) from None


def dump(
    target: URL,
    url: str,
    partial: Path,
    *,
    deadline: float,
    timeout: float,
    emit: Callable[[str], None],
    schema: str | None = None,
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
    if schema:  # a schema tenant: its schema alone (quoted: a pattern's case is kept)
        argv.append(f'--schema="{schema}"')
    emit(f"Running pg_dump of {display_url(url)}{f' (schema {schema})' if schema else ''}.")
    group = ProcessGroup(emit, deadline, url=url)
    with group:
        _start(group, argv, env=_pg_env(target), label="pg_dump")
        group.pump()
    dump = group.results["pg_dump"]
    if group.timed_out:
        raise BackupError(
            f"pg_dump did not finish within {timeout:g} seconds and was stopped; "
            "no backup was kept."
        )
    if dump.exit_code != 0:
        raise BackupError(_pg_failure("pg_dump", dump, target, url, dest=partial.parent))


def restore(
    target: URL,
    url: str,
    path: Path,
    *,
    deadline: float,
    timeout: float,
    emit: Callable[[str], None],
    schema: str | None = None,
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
    entries = list_entries(path, deadline=deadline, timeout=timeout)
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
    group = ProcessGroup(emit, deadline, url=url)
    state = {"began": False, "marked": False, "sent": False}
    with group:
        # pg_restore reads a file and writes a script; it needs no password.
        restore = _start(group, restore_argv, env=_pg_env(None), label="pg_restore", stdout="pipe")
        apply = _start(
            group, psql_argv, env=_pg_env(target), label="psql", stdin=True, stdout="capture"
        )
        # a schema tenant's backup holds its schema alone: that schema is dropped and made
        # again, and nothing else of the database is touched
        preamble = f"DROP SCHEMA IF EXISTS {quoted(schema)} CASCADE;\n".encode() if schema else None
        group.add_worker(lambda: _relay(restore, apply, group, state, preamble))
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
    restore: subprocess.Popen,
    apply: subprocess.Popen,
    group: ProcessGroup,
    state: dict[str, bool],
    preamble: bytes | None = None,
) -> None:
    """Copy pg_restore's script into psql, with the preamble after BEGIN and COMMIT held back."""
    source, sink = restore.stdout, apply.stdin
    assert source is not None and sink is not None
    pending = bytearray()
    try:
        for line in iter(source.readline, b""):
            sink.write(line)
            if line.strip() == b"BEGIN;":
                sink.write(_RESTORE_PREAMBLE if preamble is None else preamble)
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


def list_entries(
    path: Path, *, deadline: float, timeout: float, shown_as: Path | None = None
) -> int:
    """How many objects the archive's table of contents lists.

    A dump of an empty database lists none, and is still a good backup (the one taken before a
    fresh database's first upgrade); what must be there is pg_dump's header with its count of
    TOC entries, which always includes the encoding and search_path settings.
    """
    group = ProcessGroup(lambda line: None, deadline)
    with group:
        _start(
            group,
            ["pg_restore", "--list", str(path)],
            env=_pg_env(None),
            label="list",
            stdout="capture",
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


def verify(
    path: Path, *, deadline: float, timeout: float, shown_as: Path, full: bool = True
) -> str:
    # --list only reads the table of contents at the start of the file; a truncated or damaged
    # data section passes it. Reading the whole archive (into /dev/null) is what catches those.
    entries = list_entries(path, deadline=deadline, timeout=timeout, shown_as=shown_as)
    empty = " (an empty database)" if entries == 0 else ""
    if not full:
        return f"pg_restore --list read {entries} entries{empty}"
    group = ProcessGroup(lambda line: None, deadline)
    with group:
        _start(
            group,
            ["pg_restore", f"--file={os.devnull}", str(path)],
            env=_pg_env(None),
            label="read",
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
    tool: str, result: ProcessResult, target: URL, url: str, *, dest: Path | None = None
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


def _detail(result: ProcessResult) -> str:
    """The error in one line, without the tool's prefix or psql's script position."""
    lines = result.error_lines or result.lines[-3:]
    text = " ".join(" ".join(line.split()) for line in lines[:6])
    return _TOOL_PREFIX.sub("", text, count=1)


_TOOL_PREFIX = re.compile(
    r"^(?:pg_dump: error: |pg_restore: error: |psql: error: |psql:[^:]*:\d+: )"
)
