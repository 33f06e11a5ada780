"""Backups before a change, and restores after one: real pg_dump, pg_restore and psql against
real PostgreSQL databases, SQLite's backup API against real files, the sample project's real
migrations to fill them. Checked the way a user would: every table, every row, every object."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql
from sqlalchemy.engine import URL, make_url

from environments.core.backups import (
    BackupError,
    backup_database,
    dialect_of,
    restore_database,
    verify_backup,
)
from environments.core.backups import sqlite as sqlite_backups
from examples.inventory import revisions as inv
from tests.conftest import PASSWORD, PASSWORD_ROLE, alembic, pg_url

ROWS = (
    "INSERT INTO users (id, name, email) VALUES (1, 'Ada', 'ada@example.com'), (2, 'Grace', NULL)",
    "INSERT INTO products (id, name) VALUES (1, 'Widget'), (2, 'Gadget')",
    "INSERT INTO orders (id, user_id, product_id, qty, status) "
    "VALUES (1, 1, 1, 3, 'new'), (2, 2, 2, 1, 'shipped')",
    "INSERT INTO shipments (id, order_id, shipped_at) VALUES (1, 2, '2025-03-04 05:06:07')",
)


# --- looking at a database the way a user would --------------------------------------------


def pg_run(url: str, *statements: str) -> None:
    with (
        contextlib.closing(psycopg2.connect(url)) as connection,
        connection,
        connection.cursor() as cursor,
    ):
        for statement in statements:
            cursor.execute(statement)


def pg_state(url: str) -> dict[str, object]:
    """Every table with every row, every column, and every object in the user schemas."""
    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
        )
        tables = [name for (name,) in cursor.fetchall()]
        rows = {}
        for table in tables:
            cursor.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(table)))
            rows[table] = cursor.fetchall()
        cursor.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
        )
        columns = cursor.fetchall()
        cursor.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2"
        )
        relations = cursor.fetchall()
        cursor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%' "
            "AND nspname <> 'information_schema' ORDER BY 1"
        )
        schemas = cursor.fetchall()
        cursor.execute(
            "SELECT typname, typtype FROM pg_type "
            "WHERE typnamespace = 'public'::regnamespace ORDER BY 1"
        )
        types = cursor.fetchall()
        cursor.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1"
        )
        routines = cursor.fetchall()
        sequences = {}
        for schema, name, kind in relations:
            if kind == "S":
                cursor.execute(
                    sql.SQL("SELECT last_value, is_called FROM {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(name)
                    )
                )
                sequences[name] = cursor.fetchone()
    return {
        "tables": tables,
        "rows": rows,
        "columns": columns,
        "relations": relations,
        "schemas": schemas,
        "types": types,
        "routines": routines,
        "sequences": sequences,
    }


def sqlite_state(path: Path) -> dict[str, object]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        schema = connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY 1, 2"
        ).fetchall()
        tables = [name for kind, name, _, _ in schema if kind == "table"]
        rows = {t: connection.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables}
    return {"schema": schema, "tables": tables, "rows": rows}


def current(ini: Path, url: str) -> str:
    return alembic(ini, url, "current").stdout.strip()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def asyncpg(url: str) -> str:
    """The same database, as an async application would write its URL."""
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture
def shop(pg_database, inventory) -> str:
    """A PostgreSQL database at the staging revision of the sample project, with a few rows."""
    url = pg_database()
    alembic(inventory, url, "upgrade", inv.STAGING_TARGET)
    pg_run(url, *ROWS)
    return url


# --- PostgreSQL: the round trip ------------------------------------------------------------


def test_a_postgresql_backup_brings_back_every_table_row_and_object_after_an_upgrade(
    shop, inventory, tmp_path
):
    before = pg_state(shop)
    lines: list[str] = []

    result = backup_database(
        asyncpg(shop), tmp_path / "backups", name="before-upgrade", on_line=lines.append
    )

    assert result.path == tmp_path / "backups" / "before-upgrade.dump"
    assert result.kind == "pg_dump"
    assert result.size == result.path.stat().st_size > 0
    assert result.sha256 == sha256_of(result.path)
    assert "pg_restore" in result.verified
    assert result.path.stat().st_mode & 0o777 == 0o600  # every row of the database is in it
    assert files_in(tmp_path / "backups") == ["before-upgrade.dump"]
    assert any('dumping contents of table "public.users"' in line for line in lines)

    # What a release does, and what it leaves behind that the backup never held.
    alembic(inventory, shop, "upgrade", "head")
    pg_run(
        shop,
        "DELETE FROM shipments",
        "INSERT INTO audit_notes (table_name, row_id, note) VALUES ('orders', 1, 'moved')",
        "CREATE SCHEMA reporting",
        "CREATE TABLE reporting.totals (n integer)",
        "CREATE TYPE public.mood AS ENUM ('ok', 'not ok')",
        "CREATE SEQUENCE public.loose_numbers",
        "CREATE VIEW public.big_orders AS SELECT * FROM orders WHERE qty > 2",
        "CREATE FUNCTION public.answer() RETURNS integer LANGUAGE sql AS 'SELECT 42'",
    )
    assert pg_state(shop) != before

    restored: list[str] = []
    verify_backup(result.path, result.kind, expected_sha256=result.sha256)
    restore_database(asyncpg(shop), result.path, result.kind, on_line=restored.append)

    assert pg_state(shop) == before
    assert inv.STAGING_TARGET in current(inventory, shop)
    assert any(line.startswith("pg_restore: ") for line in restored)
    # Nothing of the release survived to trip the next attempt with "already exists".
    alembic(inventory, shop, "upgrade", "head")


def test_a_restore_brings_back_tables_a_downgrade_dropped(shop, inventory, tmp_path):
    alembic(inventory, shop, "upgrade", "head")
    pg_run(shop, "INSERT INTO audit_notes (table_name, row_id, note) VALUES ('users', 2, 'hi')")
    before = pg_state(shop)
    result = backup_database(shop, tmp_path, name="at-head")

    alembic(inventory, shop, "downgrade", "base")
    assert pg_state(shop)["tables"] == ["alembic_version"]

    restore_database(shop, result.path, result.kind)

    assert pg_state(shop) == before
    assert inv.HEAD in current(inventory, shop)
    # The sequences came back too: the next row gets the next number.
    pg_run(shop, "INSERT INTO audit_notes (table_name, row_id, note) VALUES ('users', 1, 'next')")
    assert [row[0] for row in pg_state(shop)["rows"]["audit_notes"]] == [1, 2]


def test_an_empty_database_can_be_backed_up_and_restored(pg_database, inventory, tmp_path):
    url = pg_database()
    result = backup_database(url, tmp_path, name="fresh")
    assert "0 entries" in result.verified

    alembic(inventory, url, "upgrade", "head")
    restore_database(url, result.path, result.kind)

    assert pg_state(url)["tables"] == []


def test_a_database_whose_name_needs_quoting_is_backed_up_and_restored(tmp_path):
    name = f"retort t'q {uuid.uuid4().hex[:6]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = URL.create(
            "postgresql", username="postgres", host="127.0.0.1", port=5432, database=name
        ).render_as_string()
        pg_run(url, "CREATE TABLE t (n integer)", "INSERT INTO t VALUES (1), (2)")
        result = backup_database(url, tmp_path, name="quoted")
        pg_run(url, "DROP TABLE t")
        restore_database(url, result.path, result.kind)
        assert pg_state(url)["rows"] == {"t": [(1,), (2,)]}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()


# --- PostgreSQL: what goes wrong -----------------------------------------------------------


def test_an_unreachable_server_is_named_and_no_file_is_left(closed_port, tmp_path):
    url = pg_url("inventory", port=closed_port)
    started = time.monotonic()

    with pytest.raises(
        BackupError, match=f"Cannot reach the PostgreSQL server at 127.0.0.1:{closed_port}"
    ):
        backup_database(url, tmp_path / "backups", name="nowhere")

    assert time.monotonic() - started < 15
    assert files_in(tmp_path / "backups") == []


def test_restoring_into_an_unreachable_server_says_so(shop, closed_port, tmp_path):
    result = backup_database(shop, tmp_path, name="b")
    with pytest.raises(BackupError, match=f"127.0.0.1:{closed_port}") as caught:
        restore_database(pg_url("inventory", port=closed_port), result.path, result.kind)
    assert "Cannot reach the PostgreSQL server" in str(caught.value)


def test_a_database_that_does_not_exist_is_named_in_the_error(tmp_path):
    name = f"retort_missing_{uuid.uuid4().hex[:8]}"
    with pytest.raises(BackupError) as caught:
        backup_database(pg_url(name), tmp_path, name="b")
    assert str(caught.value) == (
        f"The database {name} does not exist on the PostgreSQL server at 127.0.0.1:5432."
    )
    assert files_in(tmp_path) == []


def test_a_backup_past_its_timeout_is_stopped_and_leaves_no_file(shop, tmp_path):
    # A migration holding its lock: pg_dump waits for it, until Retort's timeout kills it.
    blocker = psycopg2.connect(shop)
    try:
        with blocker.cursor() as cursor:
            cursor.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(BackupError, match="did not finish within 2 seconds and was stopped"):
            backup_database(shop, tmp_path / "backups", name="slow", timeout=2)
        assert time.monotonic() - started < 10
    finally:
        blocker.rollback()
        blocker.close()
    assert files_in(tmp_path / "backups") == []


def test_a_restore_past_its_timeout_is_stopped_and_rolled_back(shop, inventory, tmp_path):
    result = backup_database(shop, tmp_path / "backups", name="b")
    alembic(inventory, shop, "upgrade", "head")
    changed = pg_state(shop)
    blocker = psycopg2.connect(shop)
    try:
        with blocker.cursor() as cursor:
            cursor.execute("LOCK TABLE orders IN ACCESS SHARE MODE")
        started = time.monotonic()
        with pytest.raises(BackupError) as caught:
            restore_database(shop, result.path, result.kind, timeout=3)
        assert time.monotonic() - started < 15
    finally:
        blocker.rollback()
        blocker.close()
    assert "did not finish within 3 seconds" in str(caught.value)
    assert "rolled back and the database is as it was" in str(caught.value)
    assert pg_state(shop) == changed


def test_without_pg_dump_installed_the_error_says_so(shop, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupError, match="pg_dump is not installed on the worker"):
        backup_database(shop, tmp_path / "backups", name="b")
    assert files_in(tmp_path / "backups") == []


def test_a_truncated_dump_is_refused(shop, tmp_path):
    pg_run(
        shop, "INSERT INTO users (id, name) SELECT i, md5(i::text) FROM generate_series(3, 5000) i"
    )
    result = backup_database(shop, tmp_path, name="b")
    data = result.path.read_bytes()
    result.path.write_bytes(data[: len(data) // 2])

    with pytest.raises(BackupError, match="damaged or truncated"):
        verify_backup(result.path, "pg_dump")
    with pytest.raises(BackupError, match="not the file that was written"):
        verify_backup(result.path, "pg_dump", expected_sha256=result.sha256)


def test_a_file_that_is_not_a_dump_is_refused_before_the_database_is_touched(shop, tmp_path):
    before = pg_state(shop)
    fake = tmp_path / "fake.dump"
    fake.write_text("-- not an archive\n")
    with pytest.raises(BackupError, match="not a readable pg_dump archive"):
        verify_backup(fake, "pg_dump")
    with pytest.raises(BackupError, match="not a readable pg_dump archive"):
        restore_database(shop, fake, "pg_dump")
    assert pg_state(shop) == before


def test_a_restore_from_a_damaged_dump_leaves_the_database_as_it_was(shop, inventory, tmp_path):
    pg_run(
        shop, "INSERT INTO users (id, name) SELECT i, md5(i::text) FROM generate_series(3, 20000) i"
    )
    result = backup_database(shop, tmp_path, name="b")
    alembic(inventory, shop, "upgrade", "head")
    pg_run(shop, "DELETE FROM shipments")
    changed = pg_state(shop)
    # Damage the table data, past the table of contents: only a full read notices.
    data = bytearray(result.path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\x5a" * 64
    result.path.write_bytes(bytes(data))

    with pytest.raises(BackupError) as caught:
        restore_database(shop, result.path, result.kind)

    assert "rolled back; the database is as it was" in str(caught.value)
    assert pg_state(shop) == changed
    assert inv.HEAD in current(inventory, shop)


def test_a_restore_that_fails_near_its_end_rolls_back_everything(shop, tmp_path):
    # The archive grants to a role that no longer exists: psql stops at the GRANT, after every
    # table was dropped and created again, and the transaction takes all of it back.
    role = f"retort_t_role_{uuid.uuid4().hex[:8]}"
    pg_run(shop, f'CREATE ROLE "{role}"', f'GRANT SELECT ON users TO "{role}"')
    try:
        result = backup_database(shop, tmp_path, name="b")
        pg_run(shop, f'REVOKE ALL ON users FROM "{role}"', f'DROP ROLE "{role}"')
        pg_run(shop, "DELETE FROM orders WHERE id = 1", "CREATE TABLE later (n integer)")
        changed = pg_state(shop)

        with pytest.raises(BackupError) as caught:
            restore_database(shop, result.path, result.kind)

        message = str(caught.value)
        assert "rolled back; the database is as it was" in message
        assert f'role "{role}" does not exist' in message
        assert pg_state(shop) == changed
    finally:
        pg_run(shop, f'DROP ROLE IF EXISTS "{role}"')


def test_an_existing_backup_is_never_overwritten(shop, tmp_path):
    first = backup_database(shop, tmp_path / "backups", name="b")
    with pytest.raises(BackupError, match="already exists"):
        backup_database(shop, tmp_path / "backups", name="b")
    assert sha256_of(first.path) == first.sha256
    assert files_in(tmp_path / "backups") == ["b.dump"]


def test_backup_names_and_folders_that_cannot_work_are_refused(shop, tmp_path):
    with pytest.raises(BackupError, match="plain file name"):
        backup_database(shop, tmp_path, name="../elsewhere")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(BackupError, match="Cannot create the backup folder"):
        backup_database(shop, not_a_folder, name="b")


def test_only_postgresql_and_sqlite_are_supported():
    for url in (
        "postgresql://u@h/db",
        "postgresql+psycopg2://u@h/db",
        "postgresql+asyncpg://u@h/db",
        "postgresql+psycopg://u@h/db",
    ):
        assert dialect_of(url) == "postgresql"
    assert dialect_of("sqlite:///x.db") == "sqlite"
    assert dialect_of("sqlite+aiosqlite:///x.db") == "sqlite"
    with pytest.raises(BackupError) as caught:
        dialect_of("mysql+pymysql://u:pw@h/db")
    assert str(caught.value) == (
        "Backups are supported for PostgreSQL and SQLite; this database is mysql."
    )
    with pytest.raises(BackupError, match="not valid"):
        dialect_of("no url at all")


def test_a_backup_of_one_kind_is_not_restored_into_the_other(shop, tmp_path):
    with pytest.raises(BackupError, match="A sqlite backup cannot be restored into a PostgreSQL"):
        restore_database(shop, tmp_path / "x.sqlite3", "sqlite")


# --- the password --------------------------------------------------------------------------


def secured_url(url: str, password: str) -> str:
    """The same database with another password, encoded the way a URL must carry it."""
    return make_url(url).set(password=password).render_as_string(hide_password=False)


WRONG = "Wr0ng-Pa55word%!"  # listed in conftest's TEST_SECRETS


@pytest.fixture
def secured(password_postgres) -> str:
    """A database on the cluster that checks passwords, with a table and rows; its URL."""
    name = f"retort_pw_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(
        host="127.0.0.1",
        port=password_postgres,
        user=PASSWORD_ROLE,
        password=PASSWORD,
        dbname="postgres",
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = URL.create(
        "postgresql",
        username=PASSWORD_ROLE,
        password=PASSWORD,
        host="127.0.0.1",
        port=password_postgres,
        database=name,
    ).render_as_string(hide_password=False)
    pg_run(
        url,
        "CREATE TABLE notes (id integer PRIMARY KEY, body text)",
        "INSERT INTO notes VALUES (1, 'one'), (2, 'two')",
    )
    yield url
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_a_wrong_password_is_refused_without_showing_it(secured, tmp_path):
    with pytest.raises(BackupError) as caught:
        backup_database(secured_url(secured, WRONG), tmp_path, name="b")
    message = str(caught.value)
    assert "refused the login of user retort_pw_user" in message
    assert "password authentication failed" in message
    assert "Wr0ng-Pa55word" not in message and PASSWORD not in message
    assert files_in(tmp_path) == []


def test_the_password_is_in_no_command_line_log_line_or_error(secured, tmp_path, monkeypatch):
    started: list[tuple[list[str], dict[str, str]]] = []
    real_popen = subprocess.Popen

    class Recording(real_popen):  # type: ignore[misc, valid-type]
        def __init__(self, args, *rest, **options):
            started.append(([str(a) for a in args], dict(options.get("env") or {})))
            super().__init__(args, *rest, **options)

    monkeypatch.setattr(subprocess, "Popen", Recording)
    lines: list[str] = []
    errors: list[str] = []

    result = backup_database(secured, tmp_path, name="b", on_line=lines.append)
    pg_run(secured, "DELETE FROM notes")
    restore_database(asyncpg(secured), result.path, result.kind, on_line=lines.append)
    wrong = secured_url(secured, WRONG)
    for attempt in (
        lambda: backup_database(wrong, tmp_path, name="c", on_line=lines.append),
        lambda: restore_database(wrong, result.path, result.kind, on_line=lines.append),
    ):
        with pytest.raises(BackupError) as caught:
            attempt()
        errors.append(str(caught.value))

    assert pg_state(secured)["rows"]["notes"] == [(1, "one"), (2, "two")]
    # each tool is started through `setpriv --pdeathsig KILL -- <tool> …` where setpriv exists
    run = [(a[a.index("--") + 1 :] if Path(a[0]).name == "setpriv" else a, e) for a, e in started]
    tools = [(argv, env) for argv, env in run if Path(argv[0]).name in {"pg_dump", "psql"}]
    assert {Path(argv[0]).name for argv, _ in tools} == {"pg_dump", "psql"}
    for argv, env in tools:
        assert not any(PASSWORD in part or "Wr0ng-Pa55word" in part for part in argv)
        assert env["PGPASSWORD"] in {PASSWORD, WRONG}
        assert env["PGCONNECT_TIMEOUT"]
    assert lines and len(errors) == 2
    for text in [*lines, *errors]:
        for secret in (PASSWORD, WRONG, "C0rrect-Horse_Battery%21", "Wr0ng-Pa55word"):
            assert secret not in text


# --- SQLite --------------------------------------------------------------------------------


@pytest.fixture
def shop_file(sqlite_url, inventory) -> tuple[str, Path]:
    url = sqlite_url("shop")
    alembic(inventory, url, "upgrade", inv.STAGING_TARGET)
    path = Path(url.removeprefix("sqlite:///"))
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        for statement in ROWS:
            connection.execute(statement)
    return url, path


def test_a_sqlite_backup_brings_back_every_table_and_row_after_an_upgrade(
    shop_file, inventory, tmp_path
):
    url, path = shop_file
    before = sqlite_state(path)
    lines: list[str] = []

    result = backup_database(
        url.replace("sqlite://", "sqlite+aiosqlite://", 1),
        tmp_path / "backups",
        name="before",
        on_line=lines.append,
    )

    assert result.path == tmp_path / "backups" / "before.sqlite3"
    assert result.kind == "sqlite"
    assert result.size == result.path.stat().st_size > 0
    assert result.sha256 == sha256_of(result.path)
    assert "integrity_check returned ok" in result.verified
    assert files_in(tmp_path / "backups") == ["before.sqlite3"]
    assert lines

    alembic(inventory, url, "upgrade", "head")
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("DELETE FROM shipments")
        connection.execute("CREATE TABLE later (n integer)")
    assert sqlite_state(path) != before

    verify_backup(result.path, result.kind, expected_sha256=result.sha256)
    restore_database(url, result.path, result.kind)

    assert sqlite_state(path) == before
    assert inv.STAGING_TARGET in current(inventory, url)
    alembic(inventory, url, "upgrade", "head")


def test_a_missing_sqlite_file_is_refused_and_not_created(tmp_path):
    missing = tmp_path / "typo.sqlite"
    with pytest.raises(BackupError, match="does not exist; there is nothing to back up"):
        backup_database(f"sqlite:///{missing}", tmp_path / "backups", name="b")
    assert not missing.exists()
    assert files_in(tmp_path / "backups") == []


def test_in_memory_sqlite_is_refused(tmp_path):
    for url in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(BackupError, match="in-memory"):
            backup_database(url, tmp_path, name="b")


def _damage_root_page(path: Path, table: str) -> None:
    with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as c:
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        page_size = c.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    start = (root[0] - 1) * page_size
    data[start : start + page_size] = b"\xa5" * page_size
    path.write_bytes(bytes(data))


def test_the_integrity_check_catches_a_damaged_sqlite_backup(shop_file, tmp_path):
    url, _ = shop_file
    damaged = backup_database(url, tmp_path, name="damaged")
    _damage_root_page(damaged.path, "users")
    with pytest.raises(BackupError, match="damaged|integrity check"):
        verify_backup(damaged.path, "sqlite")

    truncated = backup_database(url, tmp_path, name="truncated")
    data = truncated.path.read_bytes()
    truncated.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BackupError, match="truncated or damaged"):
        verify_backup(truncated.path, "sqlite")


def test_a_changed_value_is_caught_by_the_recorded_checksum(shop_file, tmp_path):
    url, _ = shop_file
    result = backup_database(url, tmp_path, name="b")
    data = result.path.read_bytes()
    assert data.count(b"Gadget") == 1
    result.path.write_bytes(data.replace(b"Gadget", b"Gidget"))

    # The structure is intact, so only the checksum recorded at backup time can tell.
    verify_backup(result.path, "sqlite")
    with pytest.raises(BackupError, match="not the file that was written"):
        verify_backup(result.path, "sqlite", expected_sha256=result.sha256)


def test_restoring_a_damaged_sqlite_backup_leaves_the_target_untouched(shop_file, tmp_path):
    url, path = shop_file
    result = backup_database(url, tmp_path / "backups", name="b")
    _damage_root_page(result.path, "users")
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("DELETE FROM orders")
    state, digest, neighbours = sqlite_state(path), sha256_of(path), files_in(path.parent)

    with pytest.raises(BackupError, match="damaged|integrity check"):
        restore_database(url, result.path, result.kind)

    assert sha256_of(path) == digest
    assert files_in(path.parent) == neighbours
    assert sqlite_state(path) == state


def test_a_write_ahead_log_left_by_a_crash_is_not_replayed_into_the_restored_file(
    shop_file, tmp_path
):
    url, path = shop_file
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
    before = sqlite_state(path)
    result = backup_database(url, tmp_path / "backups", name="b")
    # An application writes in WAL mode and dies before any checkpoint: its changes live only
    # in shop.sqlite-wal, which SQLite would apply to whatever file it finds beside it.
    crash = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA wal_autocheckpoint=0')\n"
        "c.execute('DELETE FROM orders')\n"
        "c.execute(\"UPDATE users SET name = 'Crashed'\")\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", crash, str(path)], check=True)
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 0

    restore_database(url, result.path, result.kind)

    assert not wal.exists() or wal.stat().st_size == 0
    assert sqlite_state(path) == before


def test_a_sqlite_file_another_connection_is_writing_is_not_replaced(
    shop_file, tmp_path, monkeypatch
):
    monkeypatch.setattr(sqlite_backups, "SQLITE_BUSY_TIMEOUT", 0.3)
    url, path = shop_file
    result = backup_database(url, tmp_path / "backups", name="b")
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM orders")
        with pytest.raises(BackupError, match="is in use"):
            restore_database(url, result.path, result.kind)
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert sqlite_state(path)["rows"]["orders"] == []


def test_a_restored_sqlite_file_keeps_the_permissions_of_the_one_it_replaced(shop_file, tmp_path):
    url, path = shop_file
    os.chmod(path, 0o640)
    result = backup_database(url, tmp_path / "backups", name="b")
    assert result.path.stat().st_mode & 0o777 == 0o600
    restore_database(url, result.path, result.kind)
    assert path.stat().st_mode & 0o777 == 0o640
