"""Schema tenants: one PostgreSQL database, one schema per tenant, each with its own version
table. What a schema's name may be, how it is quoted in SQL, and how alembic is told which one
to work in (`search_path` through libpq's PGOPTIONS, which every libpq client honours)."""

from __future__ import annotations

import re

# A name PostgreSQL takes without quoting (63 bytes at most), plus `$` and upper case: pg_dump's
# --schema pattern, search_path and alembic's -x all carry such a name unchanged.
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def schema_problem(name: str) -> str | None:
    """Why `name` cannot be a tenant's schema, in a sentence; None when it can."""
    if _SCHEMA_NAME.match(name):
        return None
    shown = name if len(name) <= 70 else name[:67] + "..."
    return (
        f"{shown!r} cannot be a tenant's schema: use letters, digits, _ and $, starting with a "
        "letter or _, 63 characters at most."
    )


def quoted(name: str) -> str:
    """`name` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def with_search_path(pgoptions: str, schema: str) -> str:
    """PGOPTIONS with `search_path` set to the tenant's schema (then public, where extensions
    usually live), after whatever the options held: the last setting wins."""
    if schema_problem(schema):
        raise ValueError(schema_problem(schema))
    return f"{pgoptions} -c search_path={quoted(schema)},public".strip()
