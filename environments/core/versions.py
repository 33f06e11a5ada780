"""Read which revisions a database holds, the way Alembic reads them.

Connections are time-limited and read-only in intent: the version table is read through
Alembic's `MigrationContext`, so custom table names and schemas are quoted exactly as Alembic
quotes them. Any failure comes back as a sentence with the password removed. Each read opens
its own connection and closes it: the workers read each database once a refresh interval, so a
fleet of databases never holds an idle session of Retort's between reads.

Alembic and SQLAlchemy are imported by the functions that connect, not with the module: its
`VersionRead`, `Failure` and `classify` are used where neither is needed (the models' states,
the CI gate's quick read).
"""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from environments.core.database_urls import (
    AMBIGUOUS_URL,
    connect_args,
    redact,
    sync_url,
    url_problem,
)
from environments.core.migration_lock import (
    HOLDER_QUERY,
    holder_found,
    holder_parameters,
    migration_lock_key,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection

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


def lock_holder(connection: Connection, key: int) -> dict | None:
    """Whoever else holds the migration lock `key` on this PostgreSQL database: pid, client
    address, application, user and since when its session began (None: nobody)."""
    row = connection.exec_driver_sql(HOLDER_QUERY, holder_parameters(key)).first()
    return holder_found(row)


def read_versions(
    url: str,
    *,
    version_table: str = "alembic_version",
    version_table_schema: str | None = None,
    timeout: float = 3.0,
) -> VersionRead:
    """Connect with a short timeout, read the heads stored in the version table, close."""
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

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
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect
    from sqlalchemy.exc import DBAPIError

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
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    if target.get_backend_name() == "sqlite":
        return _sqlite_engine(target, timeout)
    arguments = connect_args(target, timeout, statement_timeout)
    return create_engine(target, poolclass=NullPool, connect_args=arguments)


def _sqlite_engine(target: URL, timeout: float):
    """Open SQLite files read-only, so reading never creates or changes a file."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

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
