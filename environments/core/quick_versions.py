"""The version table read with the database driver alone, for the CI gate's quick answer.

`versions.read_versions` reads through Alembic's `MigrationContext` on a SQLAlchemy engine,
and says in words why a database could not be read. Importing those two costs a gate more
than `alembic current` takes altogether, so the gate first tries this: the same rows from a
SQLite file (read-only) or a PostgreSQL database (psycopg2, the same timeouts), the table name
always quoted — which is what Alembic's quoting comes to for any name — and nothing else.

Whatever it cannot answer plainly it hands back: `Unsure` (no version table, a schema on
SQLite, URL options, a driver it does not speak, someone holding the migration lock, any
error after connecting) sends the gate the full way, which reads again and finds the words;
a connection that failed comes back as the driver's error, for `versions.classify` to word.

No Django here.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from environments.core.database_urls import ambiguous_authority, postgres_connect_args
from environments.core.migration_lock import (
    HOLDER_QUERY,
    holder_found,
    holder_parameters,
    migration_lock_key,
)

_SQLITE = {"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"}
# the drivers `database_urls.sync_url` reads with psycopg2
_POSTGRES = {
    "postgresql",
    "postgres",
    "postgresql+psycopg2",
    "postgresql+psycopg",
    "postgresql+psycopg_async",
    "postgresql+asyncpg",
    "postgresql+pg8000",
}


class Unsure(Exception):
    """The quick read cannot answer this one plainly: read it the full way."""


@dataclass(frozen=True)
class ConnectFailed(Exception):
    """The driver could not connect: `error` is its exception, to be worded."""

    error: BaseException


def read_heads(
    url: str,
    *,
    version_table: str = "alembic_version",
    version_table_schema: str | None = None,
    timeout: float = 3.0,
) -> tuple[str, ...]:
    """The revisions in the version table, sorted as `versions.read_versions` gives them.
    Raises ConnectFailed when the database could not be reached, Unsure otherwise."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise Unsure("not a URL")
    if "?" in rest or "#" in rest:
        raise Unsure("URL options")  # the full read passes them to the driver as SQLAlchemy does
    if scheme in _SQLITE:
        return _sqlite(rest, version_table, version_table_schema, timeout)
    if scheme in _POSTGRES:
        if ambiguous_authority(url):
            raise Unsure("an ambiguous URL")  # the full read refuses it in words
        return _postgres(rest, version_table, version_table_schema, timeout)
    raise Unsure(f"no quick read for {scheme!r}")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite(rest: str, table: str, schema: str | None, timeout: float) -> tuple[str, ...]:
    database = rest.partition("/")[2]
    if schema or not database or database == ":memory:" or database.startswith("file:"):
        raise Unsure("not a plain SQLite file")
    path = Path(database).expanduser()
    if not path.is_file():
        raise Unsure("no such file")  # the full read says so in its words
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=timeout)
    except sqlite3.Error as exc:
        raise ConnectFailed(exc) from None
    try:
        rows = connection.execute(f"SELECT version_num FROM {_quoted(table)}").fetchall()
    except sqlite3.Error as exc:
        raise Unsure(str(exc)) from None
    finally:
        connection.close()
    return tuple(sorted(row[0] for row in rows))


def _postgres(rest: str, table: str, schema: str | None, timeout: float) -> tuple[str, ...]:
    import psycopg2

    try:
        connection = psycopg2.connect(
            f"postgresql://{rest}", **postgres_connect_args(timeout, statement_timeout=None)
        )
    except psycopg2.OperationalError as exc:
        raise ConnectFailed(exc) from None
    except psycopg2.Error as exc:
        raise Unsure(str(exc)) from None
    try:
        with connection.cursor() as cursor:
            qualified = f"{_quoted(schema)}.{_quoted(table)}" if schema else _quoted(table)
            cursor.execute(f"SELECT version_num FROM {qualified}")  # noqa: S608 - quoted names
            heads = tuple(sorted(row[0] for row in cursor.fetchall()))
            cursor.execute(HOLDER_QUERY, holder_parameters(migration_lock_key(table, schema)))
            if holder_found(cursor.fetchone()) is not None:
                raise Unsure("someone holds the migration lock")  # the full read names them
    except psycopg2.Error as exc:
        raise Unsure(str(exc)) from None
    finally:
        connection.close()
    return heads
