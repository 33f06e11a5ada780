"""Read which revisions a database holds, the way Alembic reads them.

Connections are time-limited and read-only in intent: the version table is read through
Alembic's `MigrationContext`, so custom table names and schemas are quoted exactly as Alembic
quotes them. Any failure comes back as a sentence with the password removed.

A reader that reads the same databases again and again (the overview, every 30 seconds) may keep
one idle connection per server database for `keep_alive` seconds: the next read then skips the
connection start-up (a new server process on PostgreSQL, authentication, a cold catalog cache).
A kept connection holds no transaction and no lock, is checked before it is used and replaced
if the server has closed it, and is closed once it has been idle for `keep_alive` seconds.
SQLite files are never kept open.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import URL, Engine
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


def read_versions(
    url: str,
    *,
    version_table: str = "alembic_version",
    version_table_schema: str | None = None,
    timeout: float = 3.0,
    keep_alive: float = 0.0,
) -> VersionRead:
    """Connect with a short timeout and read the heads stored in the version table.

    `keep_alive` > 0 keeps the connection to a server database open that many idle seconds for
    the next read of the same database (see the module's docstring); 0 closes it now.
    """
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
        cached = _cached_engine(target, timeout, keep_alive)
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
        with cached.engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "version_table": version_table,
                    "version_table_schema": version_table_schema,
                },
            )
            heads = context.get_current_heads()
            # No heads: an empty version table (at base), or none at all (Alembic never ran).
            if not heads and not inspect(connection).has_table(
                version_table, schema=version_table_schema
            ):
                return VersionRead(heads=None)
            return VersionRead(heads=tuple(sorted(heads)))
    except DBAPIError as exc:
        kind, message = classify(exc.orig if exc.orig is not None else exc)
        return VersionRead(failure=kind, message=redact(message, target))
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        kind, message = classify(exc)
        return VersionRead(failure=kind, message=redact(message, target))
    finally:
        cached.used()


# One engine per URL: it remembers its dialect's first-connect checks, which cost several round
# trips, so a re-read is one connection (or none, when one is kept) and one or two queries.
@dataclass(eq=False)
class _CachedEngine:
    engine: Engine
    keep_alive: float  # seconds an idle connection is kept; 0: the engine keeps none
    last_used: float = 0.0

    def used(self) -> None:
        self.last_used = time.monotonic()
        if self.keep_alive:
            with _engines_lock:
                _start_closer()

    def idle_connections(self) -> int:
        return self.engine.pool.checkedin() if self.keep_alive else 0


_engines: OrderedDict[tuple[str, float, float], _CachedEngine] = OrderedDict()
_engines_lock = threading.Lock()
_MAX_ENGINES = 512
_closer: threading.Thread | None = None
_closer_wake = threading.Event()  # set when an engine with a shorter keep_alive may have come


def _cached_engine(target: URL, timeout: float, keep_alive: float = 0.0) -> _CachedEngine:
    keep_alive = max(0.0, keep_alive) if target.get_backend_name() != "sqlite" else 0.0
    key = (target.render_as_string(hide_password=False), timeout, keep_alive)
    with _engines_lock:
        cached = _engines.get(key)
        if cached is not None:
            _engines.move_to_end(key)
            return cached
    if keep_alive:
        engine = _kept_engine(target, timeout, keep_alive)
    else:
        engine = open_engine(target, timeout)
    cached = _CachedEngine(engine, keep_alive)
    with _engines_lock:
        cached = _engines.setdefault(key, cached)
        while len(_engines) > _MAX_ENGINES:
            _engines.popitem(last=False)[1].engine.dispose()
    if keep_alive:
        _closer_wake.set()
    return cached


def _kept_engine(target: URL, timeout: float, keep_alive: float) -> Engine:
    """An engine that keeps one idle connection, pinged before each use. TCP keepalives and,
    on PostgreSQL, a user timeout make a kept connection to a host that went silent fail within
    `timeout` instead of hanging until the operating system gives up."""
    arguments = connect_args(target, timeout, None)
    if target.get_backend_name() == "postgresql":
        arguments |= {
            "keepalives": 1,
            "keepalives_idle": max(1, math.ceil(keep_alive)),
            "keepalives_interval": max(1, math.ceil(timeout / 3)),
            "keepalives_count": 3,
            "tcp_user_timeout": int(timeout * 1000),
        }
    return create_engine(
        target,
        pool_size=1,
        max_overflow=8,  # concurrent reads of one database open more, closed after use
        pool_timeout=timeout,
        pool_pre_ping=True,
        pool_recycle=max(keep_alive, 300.0),
        connect_args=arguments,
    )


def _kept_engines() -> list[_CachedEngine]:
    """The cached engines that keep connections (caller holds _engines_lock)."""
    return [cached for cached in _engines.values() if cached.keep_alive]


def _start_closer() -> None:
    """Start the thread that closes kept connections once idle (caller holds _engines_lock)."""
    global _closer
    if _closer is None or not _closer.is_alive():
        _closer = threading.Thread(target=_close_idle, name="retort-idle-close", daemon=True)
        _closer.start()


def _close_idle() -> None:
    """Close every kept connection idle for its engine's `keep_alive`; stop when none is left."""
    global _closer
    while True:
        with _engines_lock:
            kept = _kept_engines()
            if not kept or not any(c.idle_connections() for c in kept):
                _closer = None
                return
            wait = min(c.keep_alive for c in kept) / 4
        if _closer_wake.wait(min(max(wait, 0.05), 15.0)):
            _closer_wake.clear()
            continue
        now = time.monotonic()
        for cached in kept:
            if cached.idle_connections() and now - cached.last_used >= cached.keep_alive:
                cached.engine.pool.dispose()  # closes the idle ones; checked-out ones finish


def close_kept_connections() -> None:
    """Close every connection kept for a next read (engines stay usable)."""
    with _engines_lock:
        kept = _kept_engines()
    for cached in kept:
        cached.engine.pool.dispose()


def _forget_after_fork() -> None:
    # A forked child (a Celery pool process) must not use or close its parent's sockets, nor
    # wait on a lock another of the parent's threads held at the fork.
    global _closer, _engines_lock
    for cached in _engines.values():
        cached.engine.dispose(close=False)
    _engines.clear()
    _engines_lock = threading.Lock()
    _closer = None


os.register_at_fork(after_in_child=_forget_after_fork)


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
