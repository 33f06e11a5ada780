"""The PostgreSQL advisory lock Retort holds on a version table while it migrates it: its key,
the recipe that makes an application's own `alembic upgrade` wait for it, and the query that
names whoever else holds it. Plain strings and integers, no driver: the models and the CI
gate's quick read use them without importing SQLAlchemy.

No Django here.
"""

from __future__ import annotations

import hashlib


def migration_lock_key(version_table: str, version_table_schema: str | None) -> int:
    """The lock's key: the first 8 bytes of SHA-256("retort migration lock:" +
    "<schema>.<table>"), schema empty when none is set, read as a signed big-endian integer as
    pg_advisory_lock takes it. One per version table, so tenants sharing a database in their
    own schemas migrate side by side; documented, so that applications can take the same lock
    (`lock_recipe`)."""
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
# (psycopg2's placeholders: run on the driver's cursor, or SQLAlchemy's exec_driver_sql)
HOLDER_QUERY = """
    SELECT a.pid, host(a.client_addr), a.application_name, a.usename, a.backend_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::bigint = %(high)s AND l.objid::bigint = %(low)s
      AND l.pid <> pg_backend_pid()
"""


def holder_parameters(key: int) -> dict[str, int]:
    return {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF}


def holder_found(row) -> dict | None:  # noqa: ANN001 - a driver's row, or None
    """HOLDER_QUERY's first row as the holder Retort shows: pid, client address, application,
    user and since when its session began (None: nobody holds the lock)."""
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
