"""Throwaway PostgreSQL databases on a loopback server, each dropped at the end."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from sqlalchemy.engine import URL, make_url

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class BenchSetupError(Exception):
    """The benchmark cannot run with the given configuration."""


@dataclass(frozen=True)
class Server:
    """Where to create databases: host, port and login, never a database of its own."""

    host: str
    port: int
    user: str
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Server:
        """The server of a postgresql:// URL; its database name is ignored, never touched."""
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise BenchSetupError(f"DATABASE_URL must be a postgresql:// URL, not {parsed!r}")
        host = parsed.host or "127.0.0.1"
        if host not in _LOOPBACK:
            raise BenchSetupError(f"the benchmark only uses a server on loopback, not {host}")
        return cls(host, parsed.port or 5432, parsed.username or "postgres", parsed.password)

    def url(self, database: str) -> str:
        return URL.create(
            "postgresql",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=database,
        ).render_as_string(hide_password=False)

    @contextlib.contextmanager
    def admin(self) -> Iterator[psycopg2.extensions.cursor]:
        """An autocommit cursor on the maintenance database `postgres`."""
        connection = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname="postgres",
            connect_timeout=5,
        )
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                yield cursor
        finally:
            connection.close()

    def version(self) -> str:
        with self.admin() as cursor:
            cursor.execute("SHOW server_version")
            return cursor.fetchone()[0]


class Databases:
    """Creates databases named `<prefix>_<suffix>` and drops every one it created."""

    def __init__(self, server: Server, prefix: str) -> None:
        self.server = server
        self.prefix = prefix
        self.created: list[str] = []

    def create(self, suffix: str = "") -> str:
        """Create a fresh database; returns its URL."""
        name = self.name(suffix)
        with self.server.admin() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        return self.server.url(name)

    def name(self, suffix: str = "") -> str:
        return f"{self.prefix}_{suffix}" if suffix else self.prefix

    def copy(self, suffix: str, template: str, *, strategy: str = "FILE_COPY") -> str:
        """A new database copied from `template` (one of ours, nobody connected to it), file
        by file (FILE_COPY: fast for a large one) or through the WAL (WAL_LOG: fast for many
        small ones); returns its URL."""
        name = self.name(suffix)
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY {}").format(
            sql.Identifier(name), sql.Identifier(template), sql.SQL(strategy)
        )
        with self.server.admin() as cursor:
            for attempt in range(50):  # an autovacuum worker may be visiting the template
                try:
                    cursor.execute(statement)
                    break
                except psycopg2.errors.ObjectInUse:
                    if attempt == 49:
                        raise
                    time.sleep(0.1)
        self.created.append(name)
        return self.server.url(name)

    def drop(self, *names: str) -> None:
        """Drop databases created here (disconnecting their sessions)."""
        with self.server.admin() as cursor:
            for name in names:
                cursor.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
                self.created.remove(name)

    def drop_all(self) -> list[str]:
        """Drop every database created here (disconnecting its sessions); returns the names."""
        dropped = []
        with self.server.admin() as cursor:
            while self.created:
                name = self.created.pop()
                cursor.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
                dropped.append(name)
        return dropped
