"""Indexes PostgreSQL marks INVALID (`pg_index.indisvalid` false): what a `CREATE INDEX
CONCURRENTLY` leaves behind when it is cancelled — by `statement_timeout`, `lock_timeout`, a
deadlock or a duplicate key. The index is still there, still written to on every insert and
update, and never used for a query; the next `CREATE INDEX CONCURRENTLY` of the same name
fails because it exists. A run that may have built one is checked before and after.

No Django here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

_INVALID = text(
    """
    SELECT n.nspname, c.relname, t.relname
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_class t ON t.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    ORDER BY 1, 2
    """
)


@dataclass(frozen=True, order=True)
class InvalidIndex:
    schema: str
    name: str
    table: str

    def phrase(self) -> str:
        return f"{self.name} on {self.table}" + (
            f" (schema {self.schema})" if self.schema != "public" else ""
        )


def invalid_indexes(connection: Connection) -> set[InvalidIndex]:
    """Every INVALID index of the database the connection is on."""
    return {InvalidIndex(*row) for row in connection.execute(_INVALID)}


def sentence(found: set[InvalidIndex]) -> str:
    """What a person is told about INVALID indexes a run left."""
    names = ", ".join(index.phrase() for index in sorted(found))
    drops = "; ".join(
        f"DROP INDEX CONCURRENTLY {_quoted(index.schema)}.{_quoted(index.name)}"
        for index in sorted(found)
    )
    plural = len(found) != 1
    return (
        f"PostgreSQL marks index{'es' if plural else ''} {names} INVALID: "
        f"{'their' if plural else 'its'} CREATE INDEX CONCURRENTLY did not finish, so "
        f"{'they are' if plural else 'it is'} kept up to date on every write and never used. "
        f"Drop {'them' if plural else 'it'} ({drops}) before trying again."
    )


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
