"""Read which revisions a database holds, the way Alembic reads them.

Connections are time-limited and read-only in intent: the version table is read through
Alembic's `MigrationContext`, so custom table names and schemas are quoted exactly as Alembic
quotes them. Any failure comes back as a sentence with the password removed. Each read opens
its own connection and closes it: the workers read each database once a refresh interval, so a
fleet of databases never holds an idle session of Retort's between reads.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import urllib.parse
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from environments.core.database_urls import (
    AMBIGUOUS_URL,
    connect_args,
    redact,
    sync_url,
    url_problem,
)

_AUTH_MARKERS = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "access denied for user",
    "pg_hba.conf rejects",
)
_UNREACHABLE_MARKERS = (
    "connection refused",
    "could not connect",
    "timeout expired",
    "timed out",
    "could not translate host name",
    "name or service not known",
    "no route to host",
    "network is unreachable",
    "server closed the connection unexpectedly",
    "can't connect to",
    "unable to open database file",
)


class Failure(StrEnum):
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth_failed"
    ERROR = "error"


@dataclass(frozen=True)
class VersionRead:
    """The outcome of reading one database's version table.

    `heads` is None when the database has no version table; `failure` is set when the database
    could not be read at all.
    """

    heads: tuple[str, ...] | None = None
    failure: Failure | None = None
    message: str | None = None
    # PostgreSQL: the session of someone else holding the migration lock (`lock_holder`)
    lock_holder: dict | None = None


def migration_lock_key(version_table: str, version_table_schema: str | None) -> int:
    """The PostgreSQL advisory lock Retort holds on a version table while it migrates it: the
    first 8 bytes of SHA-256("retort migration lock:" + "<schema>.<table>"), schema empty when
    none is set, read as a signed big-endian integer as pg_advisory_lock takes it. One per
    version table, so tenants sharing a database in their own schemas migrate side by side;
    documented, so that applications can take the same lock (`lock_recipe`)."""
    name = f"{version_table_schema or ''}.{version_table}".encode()
    digest = hashlib.sha256(b"retort migration lock:" + name).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_recipe(key: int) -> str:
    """Two statements for a project's env.py, right after `with engine.connect() as connection:`,
    that make an application's own `alembic upgrade` wait while Retort (or another pod) holds
    the migration lock `key`. Retort's own runs pass over it: they already hold the lock, and
    PGOPTIONS sets `retort.job` on their connection."""
    return (
        "connection.exec_driver_sql(\n"
        f'    "SELECT pg_advisory_lock({key}) '
        "WHERE current_setting('retort.job', true) IS NULL\"\n"
        ")\n"
        "connection.commit()  # held by the session until it closes; alembic begins after it\n"
    )


# who else holds an advisory lock on the key: pg_locks splits a bigint key into two oids
_HOLDER = text(
    """
    SELECT a.pid, host(a.client_addr), a.application_name, a.usename, a.backend_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::bigint = :high AND l.objid::bigint = :low AND l.pid <> pg_backend_pid()
    """
)


def lock_holder(connection: Connection, key: int) -> dict | None:
    """Whoever else holds the migration lock `key` on this PostgreSQL database: pid, client
    address, application, user and since when its session began (None: nobody)."""
    row = connection.execute(
        _HOLDER, {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF}
    ).first()
    if row is None:
        return None
    pid, client, application, user, since = row
    return {
        "pid": pid,
        "client": client or "",
        "application": application or "",
        "user": user or "",
        "since": since.isoformat() if since is not None else None,
    }


def read_versions(
    url: str,
    *,
    version_table: str = "alembic_version",
    version_table_schema: str | None = None,
    timeout: float = 3.0,
) -> VersionRead:
    """Connect with a short timeout, read the heads stored in the version table, close."""
    if url_problem(url) == AMBIGUOUS_URL:
        # a URL stored before this check: connecting would look part of its password up as a
        # host name, on this machine's resolver and beyond
        return VersionRead(failure=Failure.ERROR, message=AMBIGUOUS_URL)
    try:
        target = sync_url(url)
    except (ArgumentError, ValueError):
        return VersionRead(
            failure=Failure.ERROR,
            message="The database URL is not valid; expected dialect+driver://user@host/database.",
        )
    try:
        engine = open_engine(target, timeout)
    except ReadFailure as exc:
        return VersionRead(failure=exc.kind, message=redact(exc.message, target))
    except NoSuchModuleError:
        return VersionRead(
            failure=Failure.ERROR,
            message=f"Retort has no driver for {target.drivername!r} URLs installed.",
        )
    except ModuleNotFoundError as exc:
        return VersionRead(
            failure=Failure.ERROR,
            message=f"Retort has no driver for {target.drivername!r} URLs installed ({exc.name}).",
        )
    except (ArgumentError, ValueError, TypeError) as exc:
        return VersionRead(
            failure=Failure.ERROR, message=redact(f"The URL is not usable: {exc}", target)
        )
    try:
        with engine.connect() as connection:
            return read_versions_on(
                connection, version_table=version_table, version_table_schema=version_table_schema
            )
    except DBAPIError as exc:
        kind, message = classify(exc.orig if exc.orig is not None else exc)
        return VersionRead(failure=kind, message=redact(message, target))
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        kind, message = classify(exc)
        return VersionRead(failure=kind, message=redact(message, target))
    finally:
        engine.dispose()


def read_versions_on(
    connection: Connection,
    *,
    version_table: str = "alembic_version",
    version_table_schema: str | None = None,
) -> VersionRead:
    """The heads in the version table, read on an open connection (a job's, which holds the
    migration lock on it). Driver errors are the caller's to turn into words (`classify`)."""
    context = MigrationContext.configure(
        connection,
        opts={"version_table": version_table, "version_table_schema": version_table_schema},
    )
    heads = context.get_current_heads()
    # No heads: an empty version table (at base), or none at all (Alembic never ran).
    missing = not heads and not inspect(connection).has_table(
        version_table, schema=version_table_schema
    )
    holder = None
    if connection.dialect.name == "postgresql":  # last: a failure here loses nothing read
        try:
            holder = lock_holder(
                connection, migration_lock_key(version_table, version_table_schema)
            )
        except DBAPIError:
            holder = None  # a server without pg_locks' columns: nobody is named
    return VersionRead(heads=None if missing else tuple(sorted(heads)), lock_holder=holder)


class ReadFailure(Exception):
    def __init__(self, kind: Failure, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def open_engine(target: URL, timeout: float, statement_timeout: float | None = None):
    """A NullPool engine that connects within `timeout` seconds and lets a statement run for
    `statement_timeout` (default: the same); SQLite files are opened read-only."""
    if target.get_backend_name() == "sqlite":
        return _sqlite_engine(target, timeout)
    arguments = connect_args(target, timeout, statement_timeout)
    return create_engine(target, poolclass=NullPool, connect_args=arguments)


def _sqlite_engine(target: URL, timeout: float):
    """Open SQLite files read-only, so reading never creates or changes a file."""
    database = target.database or ""
    if database in {"", ":memory:"} or database.startswith("file::memory:"):
        raise ReadFailure(Failure.ERROR, "An in-memory SQLite database has nothing to read.")
    path = Path(database).expanduser()
    if not path.exists():
        raise ReadFailure(Failure.UNREACHABLE, f"The SQLite file {path} does not exist.")
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)

    return create_engine("sqlite+pysqlite://", poolclass=NullPool, creator=connect)


def classify(error: BaseException) -> tuple[Failure, str]:
    """Turn a driver error into a kind and a one-paragraph message."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = re.sub(r"\(Background on this error at: [^)]*\)", "", text).strip()
    lowered = text.lower()
    if any(marker in lowered for marker in _AUTH_MARKERS):
        return Failure.AUTH_FAILED, f"The database refused the login: {text}"
    if "role" in lowered and "does not exist" in lowered:
        return Failure.AUTH_FAILED, f"The database refused the login: {text}"
    if any(marker in lowered for marker in _UNREACHABLE_MARKERS):
        return Failure.UNREACHABLE, f"Cannot reach the database: {text}"
    if "file is not a database" in lowered:
        return Failure.ERROR, f"The file is not a SQLite database: {text}"
    return Failure.ERROR, f"Reading the version table failed: {text}"
