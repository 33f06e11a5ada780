"""Schema drift by reflection (issue #7): what someone changed by hand is found and said in the
right words; identical schemas say nothing, on PostgreSQL and SQLite, over the sample project
built by alembic and over 20 random schemas each built twice."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from environments.core.database_urls import sync_url
from environments.core.schema import (
    SchemaReadError,
    compare_schemas,
    normalize_default,
    read_schema,
)
from examples.synthetic_schema import random_metadata
from tests.conftest import alembic


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    engine.dispose()


def diff(url_a: str, url_b: str, **options) -> list[str]:
    found = compare_schemas(
        read_schema(url_a), read_schema(url_b), left_name="staging", right_name="prod", **options
    )
    return [d.detail for d in found]


@pytest.fixture(params=["sqlite", "postgresql"])
def twins(request, inventory: Path, sqlite_url, pg_database) -> tuple[str, str]:
    """Two databases built by alembic to the sample project's head."""
    if request.param == "sqlite":
        urls = (sqlite_url("staging"), sqlite_url("prod"))
    else:
        urls = (pg_database(), pg_database())
    for url in urls:
        alembic(inventory, url, "upgrade", "head")
    return urls


def test_two_databases_built_by_the_same_migrations_do_not_drift(twins):
    assert diff(*twins) == []


def test_an_index_added_by_hand_is_found(twins):
    staging, prod = twins
    execute(prod, "CREATE INDEX ix_by_hand ON orders (user_id, status)")

    assert diff(staging, prod) == [
        "prod has index ix_by_hand on orders (user_id, status); staging does not"
    ]


def test_a_table_dropped_by_hand_is_found(twins):
    staging, prod = twins
    execute(prod, "DROP TABLE audit_notes")

    assert diff(staging, prod) == ["staging has table audit_notes; prod does not"]


def _rebuild_audit_notes(url: str, *, note: str, row_id: str) -> None:
    """Change audit_notes by hand; SQLite cannot alter a column, so people rebuild the table."""
    execute(
        url,
        "DROP TABLE audit_notes",
        "CREATE TABLE audit_notes (id INTEGER NOT NULL PRIMARY KEY, "
        f"table_name VARCHAR(100) NOT NULL, row_id INTEGER {row_id}, note {note} NOT NULL, "
        "created_at DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL)",
    )


def test_a_flipped_nullable_flag_is_found(twins):
    staging, prod = twins
    if prod.startswith("postgresql"):
        execute(prod, "ALTER TABLE audit_notes ALTER COLUMN row_id DROP NOT NULL")
    else:
        _rebuild_audit_notes(prod, note="TEXT", row_id="NULL")

    assert diff(staging, prod) == ["audit_notes.row_id is NOT NULL in staging but nullable in prod"]


def test_a_column_type_changed_by_hand_is_found(twins):
    staging, prod = twins
    if prod.startswith("postgresql"):
        execute(prod, "ALTER TABLE users ALTER COLUMN email TYPE VARCHAR(320)")
        expected = "users.email is VARCHAR(255) in staging but VARCHAR(320) in prod"
    else:
        _rebuild_audit_notes(prod, note="VARCHAR(500)", row_id="NOT NULL")
        expected = "audit_notes.note is TEXT in staging but VARCHAR(500) in prod"

    assert diff(staging, prod) == [expected]


# --- no false positives: random schemas, each built twice ----------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_twenty_random_schemas_built_twice_show_no_drift(dialect, sqlite_url, pg_database):
    for seed in range(20):
        metadata = random_metadata(seed)
        if dialect == "sqlite":
            urls = (sqlite_url(f"a{seed}"), sqlite_url(f"b{seed}"))
        else:
            urls = (pg_database(), pg_database())
        for url in urls:
            engine = sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)
            metadata.create_all(engine)
            engine.dispose()
        schemas = [read_schema(url) for url in urls]

        assert sum(len(s.tables) for s in schemas) == 2 * len(metadata.tables)
        assert compare_schemas(*schemas) == [], f"seed {seed}"


def test_sqlite_and_postgresql_compare_by_generic_type_when_asked(
    inventory, sqlite_url, pg_database
):
    lite, pg = sqlite_url("dev"), pg_database()
    for url in (lite, pg):
        alembic(inventory, url, "upgrade", "head")

    assert diff(lite, pg, cross_dialect=True) == []
    assert diff(lite, pg) != []  # the dialects' own spellings differ: opt-in only


def test_default_spellings_are_one():
    assert normalize_default("'pending'::character varying") == "'pending'"
    assert normalize_default("('pending')") == "'pending'"
    assert normalize_default("now()") == normalize_default("CURRENT_TIMESTAMP")
    assert normalize_default("'0'") == normalize_default("(0)") == "0"
    assert normalize_default("nextval('users_id_seq'::regclass)") is None
    assert normalize_default("'a'::text || 'b'::text") == "'a' || 'b'"


def test_an_unreachable_database_is_said_in_words(closed_port):
    with pytest.raises(SchemaReadError, match="Cannot reach the database") as raised:
        read_schema(f"postgresql://u:S3cret-pw@127.0.0.1:{closed_port}/x")

    assert raised.value.unreachable and "S3cret-pw" not in str(raised.value)
