"""Read which revisions a database holds, the way Alembic reads them.

Connections are short-lived, time-limited and read-only in intent: the version table is read
through Alembic's `MigrationContext`, so custom table names and schemas are quoted exactly as
Alembic quotes them. Any failure comes back as a sentence with the password removed.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

# Drivers applications use in their own config, mapped to the sync driver Retort reads with.
# Plain `postgresql://` means psycopg (v3) to SQLAlchemy 2.1; Retort ships psycopg2.
_SYNC_DRIVERS = {
    "postgresql": "postgresql+psycopg2",
    "postgresql+asyncpg": "postgresql+psycopg2",
    "postgresql+psycopg_async": "postgresql+psycopg2",
    "postgresql+psycopg": "postgresql+psycopg2",
    "postgresql+pg8000": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "sqlite+aiosqlite": "sqlite+pysqlite",
    "sqlite+pysqlcipher": "sqlite+pysqlite",
    "mysql+aiomysql": "mysql+pymysql",
    "mysql+asyncmy": "mysql+pymysql",
    "mariadb+aiomysql": "mariadb+pymysql",
    "mariadb+asyncmy": "mariadb+pymysql",
}

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


def sync_url(url: str | URL) -> URL:
    """The URL Retort connects with: async drivers swapped for their sync counterparts."""
    parsed = make_url(url) if isinstance(url, str) else url
    name = parsed.drivername
    if name in _SYNC_DRIVERS:
        parsed = parsed.set(drivername=_SYNC_DRIVERS[name])
    return parsed


def redact(text: str, url: str | URL | None) -> str:
    """Remove the URL's password (plain and percent-encoded) from a message."""
    if url is None:
        return text
    try:
        password = (make_url(url) if isinstance(url, str) else url).password
    except (ArgumentError, ValueError):
        password = None
    if password:
        for form in {
            str(password),
            urllib.parse.quote(str(password), safe=""),
            urllib.parse.quote_plus(str(password)),
        }:
            if form:
                text = text.replace(form, "***")
    return text


def display_url(url: str) -> str:
    """The URL as it may be shown: never with its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(not a valid database URL)"


def read_versions(
    url: str,
    *,
    version_table: str = "alembic_version",
    version_table_schema: str | None = None,
    timeout: float = 3.0,
) -> VersionRead:
    """Connect with a short timeout and read the heads stored in the version table."""
    try:
        target = sync_url(url)
    except (ArgumentError, ValueError):
        return VersionRead(
            failure=Failure.ERROR,
            message="The database URL is not valid; expected dialect+driver://user@host/database.",
        )
    try:
        engine = _cached_engine(target, timeout)
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
            exists = inspect(connection).has_table(version_table, schema=version_table_schema)
            if not exists:
                return VersionRead(heads=None)
            context = MigrationContext.configure(
                connection,
                opts={
                    "version_table": version_table,
                    "version_table_schema": version_table_schema,
                },
            )
            return VersionRead(heads=tuple(sorted(context.get_current_heads())))
    except DBAPIError as exc:
        kind, message = classify(exc.orig if exc.orig is not None else exc)
        return VersionRead(failure=kind, message=redact(message, target))
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        kind, message = classify(exc)
        return VersionRead(failure=kind, message=redact(message, target))


# Engines hold no connection (NullPool) but remember their dialect's first-connect checks, which
# cost several round trips; keeping one per URL makes a re-read one connection and one query.
_engines: OrderedDict[tuple[str, float], Engine] = OrderedDict()
_engines_lock = threading.Lock()
_MAX_ENGINES = 512


def _cached_engine(target: URL, timeout: float) -> Engine:
    key = (target.render_as_string(hide_password=False), timeout)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is not None:
            _engines.move_to_end(key)
            return engine
    engine = open_engine(target, timeout)
    with _engines_lock:
        _engines[key] = engine
        while len(_engines) > _MAX_ENGINES:
            _engines.popitem(last=False)[1].dispose()
    return engine


class ReadFailure(Exception):
    def __init__(self, kind: Failure, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def open_engine(target: URL, timeout: float, statement_timeout: float | None = None):
    """A NullPool engine that connects within `timeout` seconds and lets a statement run for
    `statement_timeout` (default: the same); SQLite files are opened read-only."""
    backend = target.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(target, timeout)
    connect_args: dict[str, object] = {}
    if backend == "postgresql":
        # libpq counts whole seconds and treats anything under 2 as 2.
        statement_ms = int((statement_timeout or timeout) * 1000)
        connect_args = {
            "connect_timeout": max(2, math.ceil(timeout)),
            "options": f"-c statement_timeout={statement_ms}",
            "application_name": "retort",
        }
    elif backend in {"mysql", "mariadb"}:
        connect_args = {"connect_timeout": max(1, math.ceil(timeout))}
    return create_engine(target, poolclass=NullPool, connect_args=connect_args)


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


_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][\w+.-]*://[^\s:/@]*:)(?P<password>[^\s@/]+)(?=@)")


def redact_urls(text: str) -> str:
    """Mask the password of every `scheme://user:password@host` URL found in free text."""
    return _URL_PASSWORD.sub(r"\g<head>***", text)
