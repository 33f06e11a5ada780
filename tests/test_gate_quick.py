"""The CI gate's quick answer: a database at its scripts' heads, an unchanged script directory,
answered without Alembic or SQLAlchemy — and the same answer, word for word, as the full read
gives, which every other case takes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from io import StringIO
from pathlib import Path

import psycopg2
import pytest
from django.core.management import call_command
from django.db import connection

from environments import gate, reads
from environments.core import quick_versions, versions
from environments.models import CurrentState, Project, ScriptsDigest
from examples.inventory import revisions as inv
from tests.conftest import EXAMPLE, REPO, alembic, pg_url, write_revision

pytestmark = pytest.mark.django_db

ODD_TABLE = 'Odd "Versions" table'
ODD_SCHEMA = "Ops Schema"


def _status(*args: str) -> tuple[int, list[dict]]:
    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("migration_status", "--json", *args, stdout=out)
    rows = json.loads(out.getvalue())
    for row in rows:
        row.pop("checked_at")
    return exit_info.value.code, rows


def _read_fully(project: Project) -> None:
    """A worker's read: it stores the states and the scripts' digest."""
    reads.environments_read(environments=list(project.environments.select_related("project")))


def _quick(project: Project):  # noqa: ANN202
    environments = list(project.environments.select_related("project"))
    return gate.quick_read([project], environments)


def _pg_at_head(pg_database, inventory: Path, *, table: str, schema: str | None) -> str:
    url = pg_database()
    if schema:
        with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA "{schema}"')
            db.commit()
    extra = ["-x", f"version_table={table}"] + (
        ["-x", f"version_table_schema={schema}"] if schema else []
    )
    alembic(inventory, url, *extra, "upgrade", "head")
    return url


def _case(name, inventory, sqlite_url, pg_database, closed_port, tmp_path):  # noqa: ANN001, ANN202, PLR0911
    """The project's settings and the environment's URL for one case."""
    if name == "at the heads (SQLite)":
        url = sqlite_url()
        alembic(inventory, url, "upgrade", "head")
        return {}, url
    if name == "at the heads (PostgreSQL, an odd version table in an odd schema)":
        url = _pg_at_head(pg_database, inventory, table=ODD_TABLE, schema=ODD_SCHEMA)
        return {"version_table": ODD_TABLE, "version_table_schema": ODD_SCHEMA}, url
    if name == "behind":
        url = sqlite_url()
        alembic(inventory, url, "upgrade", inv.STAGING_TARGET)
        return {}, url
    if name == "an unknown revision":
        url = sqlite_url()
        alembic(inventory, url, "upgrade", "head")
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            db.execute("UPDATE alembic_version SET version_num = '0123456789ab'")
            db.commit()
        return {}, url
    if name == "no version table":
        url = sqlite_url()
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            db.execute("CREATE TABLE app (id INTEGER)")
        return {}, url
    if name == "a file that is not a database":
        path = tmp_path / "notes.sqlite"
        path.write_text("these are not the tables you are looking for\n" * 100)
        return {}, f"sqlite:///{path}"
    if name == "a server that does not answer":
        return {}, pg_url("nowhere", port=closed_port)
    if name == "a login the server refuses":
        return {}, pg_url("postgres", user="no_such_role_here")
    raise AssertionError(name)


# each case: whether the quick read answers it, and the gate's exit code
CASES = {
    "at the heads (SQLite)": (True, 0),
    "at the heads (PostgreSQL, an odd version table in an odd schema)": (True, 0),
    "a server that does not answer": (True, 2),
    "a login the server refuses": (True, 2),
    "behind": (False, 1),
    "an unknown revision": (False, 1),
    "no version table": (False, 1),
    "a file that is not a database": (False, 2),
}


@pytest.mark.parametrize("case", CASES)
def test_the_quick_answer_is_the_full_reads_answer_and_only_where_it_can_be(
    case, inventory, make_project, sqlite_url, pg_database, closed_port, tmp_path
):
    fields, url = _case(case, inventory, sqlite_url, pg_database, closed_port, tmp_path)
    project = make_project(inventory, {"prod": url}, **fields)
    _read_fully(project)
    assert ScriptsDigest.objects.filter(project=project).exists()

    quick = _quick(project)
    with_digest = _status("--project", "inventory")
    ScriptsDigest.objects.filter(project=project).delete()
    assert _quick(project) is None  # no digest: nothing to reuse
    fully = _status("--project", "inventory")

    answered_quickly, exit_code = CASES[case]
    assert (quick is not None) == answered_quickly
    assert with_digest == fully
    code, rows = fully
    assert code == exit_code
    if exit_code == 0:
        assert rows[0]["status"] == "current" and rows[0]["heads"] == [inv.HEAD]
    else:
        assert rows[0]["status"] != "current"
    if exit_code == 2:  # a database that could not be read, in words
        assert rows[0]["error"] and "Traceback" not in rows[0]["error"]


def test_someone_holding_the_migration_lock_sends_the_gate_the_full_way(
    inventory, make_project, pg_database
):
    url = _pg_at_head(pg_database, inventory, table="alembic_version", schema=None)
    project = make_project(inventory, {"prod": url})
    _read_fully(project)
    prod = project.environments.get()
    with contextlib.closing(psycopg2.connect(url)) as holder, holder.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [prod.lock_key])

        assert _quick(project) is None
        code, rows = _status("--project", "inventory")

    assert code == 0 and rows[0]["status"] == "current"
    assert CurrentState.objects.get(environment=prod).migration_lock["pid"] > 0


def test_a_new_revision_file_is_seen_though_a_digest_was_stored(
    inventory, make_project, sqlite_url
):
    url = sqlite_url()
    alembic(inventory, url, "upgrade", "head")
    project = make_project(inventory, {"prod": url})
    _read_fully(project)
    assert _status("--project", "inventory")[0] == 0

    write_revision(inventory.parent / "migrations" / "versions", "a1b2c3d4e5f6", inv.HEAD)

    assert _quick(project) is None
    code, rows = _status("--project", "inventory")
    assert code == 1
    assert rows[0]["status"] == "behind" and rows[0]["pending"] == ["a1b2c3d4e5f6"]


def test_an_edited_alembic_ini_or_project_setting_sends_the_gate_the_full_way(
    inventory, make_project, sqlite_url
):
    url = sqlite_url()
    alembic(inventory, url, "upgrade", "head")
    project = make_project(inventory, {"prod": url})
    _read_fully(project)
    assert _quick(project) is not None

    with inventory.open("a") as ini:
        ini.write("\n# edited\n")
    assert _quick(project) is None
    _read_fully(project)
    assert _quick(project) is not None

    project.multiple_heads = "single"
    project.save()
    project.refresh_from_db()
    assert _quick(project) is None


def test_a_release_link_switched_to_other_scripts_is_seen(tmp_path, make_project, sqlite_url):
    releases = tmp_path / "releases"
    first = releases / "1"
    shutil.copytree(EXAMPLE, first, ignore=shutil.ignore_patterns("__pycache__"))
    second = releases / "2"
    shutil.copytree(first, second)  # the same files, the same sizes and mtimes
    write_revision(second / "migrations" / "versions", "a1b2c3d4e5f6", inv.HEAD)
    current = tmp_path / "current"
    current.symlink_to(first)
    url = sqlite_url()
    alembic(current / "alembic.ini", url, "upgrade", "head")
    project = make_project(current / "alembic.ini", {"prod": url})
    _read_fully(project)
    assert _quick(project) is not None

    current.unlink()
    current.symlink_to(second)  # the deploy

    assert _quick(project) is None
    code, rows = _status("--project", "inventory")
    assert code == 1 and rows[0]["pending"] == ["a1b2c3d4e5f6"]


def test_answers_stored_by_another_alembic_version_are_not_reused(
    inventory, make_project, sqlite_url
):
    url = sqlite_url()
    alembic(inventory, url, "upgrade", "head")
    project = make_project(inventory, {"prod": url})
    _read_fully(project)
    assert _quick(project) is not None
    stored = ScriptsDigest.objects.get(project=project)
    stored.key["settings"]["alembic"] = "0.0.1"
    stored.save()

    assert _quick(project) is None


@pytest.mark.parametrize(
    ("backend", "table", "schema"),
    [
        (backend, table, None)
        for backend in ("sqlite", "postgresql")
        for table in ("alembic_version", "MixedCase", 'we"ird name', "select")
    ]
    + [("postgresql", ODD_TABLE, ODD_SCHEMA)],  # SQLite has no schemas of its own
)
def test_the_quick_read_finds_the_rows_alembic_finds_in_any_version_table(
    backend, table, schema, inventory, sqlite_url, pg_database
):
    if backend == "sqlite":
        url = sqlite_url()
        alembic(inventory, url, "-x", f"version_table={table}", "upgrade", inv.STAGING_TARGET)
    else:
        url = _pg_at_head(pg_database, inventory, table=table, schema=schema)

    quick = quick_versions.read_heads(url, version_table=table, version_table_schema=schema)
    full = versions.read_versions(url, version_table=table, version_table_schema=schema)

    assert full.failure is None and full.heads
    assert quick == full.heads


def test_a_table_that_is_not_there_is_left_to_the_full_read(sqlite_url, inventory):
    url = sqlite_url()
    alembic(inventory, url, "upgrade", inv.CREATE_USERS)

    with pytest.raises(quick_versions.Unsure):
        quick_versions.read_heads(url, version_table="other_version")


@pytest.mark.django_db(transaction=True)
def test_the_gate_answers_without_importing_alembic_or_sqlalchemy(
    inventory, make_project, sqlite_url
):
    if connection.vendor != "postgresql":
        pytest.skip("needs the PostgreSQL dashboard database used in CI")
    url = sqlite_url()
    alembic(inventory, url, "upgrade", "head")
    project = make_project(inventory, {"prod": url})
    db = connection.settings_dict
    env = {
        "DATABASE_URL": f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "PATH": "/usr/bin:/bin",
    }
    argv = [sys.executable, "-X", "importtime", "manage.py", "migration_status", "--env", "prod"]

    runs = [
        subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        for _ in range(2)
    ]

    first, second = runs
    assert first.returncode == second.returncode == 0, first.stderr[-2000:]
    assert first.stdout == second.stdout == f"inventory/prod: current at {inv.HEAD[:12]}\n"
    imported = {line.rpartition("|")[2].strip() for line in second.stderr.splitlines()}
    assert "alembic" in {line.rpartition("|")[2].strip() for line in first.stderr.splitlines()}
    assert {"alembic", "sqlalchemy", "celery"} & imported == set()
    state = CurrentState.objects.get(environment__project=project)
    assert state.status == "current" and state.heads == [inv.HEAD]


def test_django_starts_without_sqlalchemy_alembic_or_celery():
    code = (
        "import os, sys, django\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'dashboard.settings')\n"
        "django.setup()\n"
        "import environments.gate\n"
        "print(sorted(m for m in ('sqlalchemy', 'alembic', 'celery') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "RETORT_DATA_DIR": str(REPO / "var")},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_admin_checks_see_every_registration_though_start_up_loads_none():
    code = (
        "import os, django\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'dashboard.settings')\n"
        "django.setup()\n"
        "from django.contrib import admin\n"
        "from django.core import checks\n"
        "before = len(admin.site._registry)\n"
        "problems = checks.run_checks(tags=['admin'])\n"
        "print(before, len(admin.site._registry), len(problems))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "RETORT_DATA_DIR": str(REPO / "var")},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    before, after, problems = map(int, result.stdout.split())
    assert before == 0 and after >= 10 and problems == 0
