"""Each environment's status, read from real SQLite files and real PostgreSQL databases."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from environments import overviews, reads
from environments.core import status as core_status
from environments.core.script_config import config_from_ini
from environments.core.scripts import load_index
from environments.core.versions import read_versions
from environments.models import AuditEvent, CurrentState, Environment
from examples.inventory import revisions as inv
from examples.synthetic import write_history
from tests.conftest import PASSWORD, PASSWORD_ROLE, alembic, pg_url

pytestmark = pytest.mark.django_db


def _read(project, name="target"):
    environment = Environment.objects.select_related("project").get(project=project, slug=name)
    return reads.environment_read(environment=environment)


def _execute(url: str, sql: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(parsed.database) as connection:
            connection.execute(sql)
    else:
        connection = psycopg2.connect(
            host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database
        )
        with connection, connection.cursor() as cursor:
            cursor.execute(sql)
        connection.close()


def test_a_database_at_head_is_current(inventory, make_project, target_url):
    alembic(inventory, target_url, "upgrade", "head")
    project = make_project(inventory, {"target": target_url})

    snapshot = _read(project)

    assert snapshot.status == "current"
    assert snapshot.heads == [inv.HEAD]
    assert snapshot.pending == []
    assert snapshot.error == ""


def test_a_database_behind_lists_pending_revisions_in_apply_order(
    inventory, make_project, target_url
):
    alembic(inventory, target_url, "upgrade", inv.PROD_TARGET)
    project = make_project(inventory, {"target": target_url})

    snapshot = _read(project)

    assert snapshot.status == "behind"
    assert snapshot.heads == [inv.PROD_TARGET]
    position = inv.ALL_REVISIONS.index(inv.PROD_TARGET)
    assert snapshot.pending == inv.ALL_REVISIONS[position + 1 :]
    assert len(snapshot.pending) == 6


def test_a_database_before_the_branch_lists_both_branches_and_the_merge(
    inventory, make_project, target_url
):
    alembic(inventory, target_url, "upgrade", inv.CREATE_PRODUCTS)
    project = make_project(inventory, {"target": target_url})

    snapshot = _read(project)
    ran = alembic(inventory, target_url, "upgrade", "heads")

    assert snapshot.status == "behind"
    assert snapshot.pending.index(inv.MERGE_REVISION) > snapshot.pending.index(
        inv.CREATE_ORDER_REPORTS
    )
    assert snapshot.pending.index(inv.CREATE_ORDER_REPORTS) > snapshot.pending.index(
        inv.CREATE_ORDERS
    )
    for revision in snapshot.pending:
        assert f"-> {revision}" in ran.stderr


def test_an_empty_version_table_means_everything_is_pending(inventory, make_project, target_url):
    alembic(inventory, target_url, "stamp", "base")
    alembic(inventory, target_url, "upgrade", inv.CREATE_USERS)
    alembic(inventory, target_url, "downgrade", "base")
    project = make_project(inventory, {"target": target_url})

    snapshot = _read(project)

    assert snapshot.status == "behind"
    assert snapshot.heads == []
    assert snapshot.pending == inv.ALL_REVISIONS


def test_a_revision_the_scripts_do_not_have_is_named(inventory, make_project, target_url):
    alembic(inventory, target_url, "upgrade", "head")
    _execute(target_url, "UPDATE alembic_version SET version_num = 'feedfacecafe'")
    project = make_project(inventory, {"target": target_url})

    snapshot = _read(project)

    assert snapshot.status == "unknown_revision"
    assert snapshot.unknown == ["feedfacecafe"]
    assert "feedfacecafe" in snapshot.error
    assert "does not have" in snapshot.error


def test_a_database_without_a_version_table_is_uninitialized(inventory, make_project, target_url):
    _execute(target_url, "CREATE TABLE something_else (id integer)")
    project = make_project(inventory, {"target": target_url})

    snapshot = _read(project)

    assert snapshot.status == "uninitialized"
    assert snapshot.heads == []
    assert "no version table" in snapshot.error


def test_a_custom_version_table_in_another_schema_is_read(inventory, make_project, pg_database):
    url = pg_database()
    _execute(url, "CREATE SCHEMA ops")
    alembic(
        inventory,
        url,
        "-x",
        "version_table=Deploy-Versions",
        "-x",
        "version_table_schema=ops",
        "upgrade",
        inv.STAGING_TARGET,
    )
    project = make_project(
        inventory, {"target": url}, version_table="Deploy-Versions", version_table_schema="ops"
    )

    snapshot = _read(project)

    assert snapshot.status == "behind"
    assert snapshot.heads == [inv.STAGING_TARGET]
    assert len(snapshot.pending) == 3


def test_odd_version_table_names_are_quoted_not_injected(inventory, make_project, target_url):
    odd = 'v"; DROP TABLE users; --'
    alembic(inventory, target_url, "-x", f"version_table={odd}", "upgrade", "head")
    project = make_project(inventory, {"target": target_url}, version_table=odd)

    snapshot = _read(project)

    assert snapshot.status == "current"
    read_again = read_versions(target_url, version_table=odd)
    assert read_again.heads == (inv.HEAD,)
    assert read_versions(target_url).heads is None  # the default table does not exist


def test_two_rows_in_the_version_table_are_two_heads(tmp_path, make_project, target_url):
    history = write_history(tmp_path / "gen", 30, seed=5, heads=2)
    alembic(history.alembic_ini, target_url, "upgrade", "heads")
    project = make_project(history.alembic_ini, {"target": target_url})

    snapshot = _read(project)

    assert snapshot.status == "current"
    assert sorted(snapshot.heads) == sorted(history.heads)
    assert len(snapshot.heads) == 2


def test_one_of_two_heads_behind_is_behind(tmp_path, make_project, target_url):
    history = write_history(tmp_path / "gen", 30, seed=5, heads=2)
    index = load_index(config_from_ini(history.alembic_ini))
    first, second = sorted(history.heads)
    parent = index.revisions[first].down_revisions[0]
    alembic(history.alembic_ini, target_url, "upgrade", parent)
    alembic(history.alembic_ini, target_url, "upgrade", second)
    project = make_project(history.alembic_ini, {"target": target_url})

    snapshot = _read(project)

    assert snapshot.status == "behind"
    assert snapshot.pending == [first]


def test_scripts_with_several_heads_are_flagged(tmp_path, make_project, sqlite_url):
    history = write_history(tmp_path / "gen", 30, seed=5, heads=2)
    url = sqlite_url()
    alembic(history.alembic_ini, url, "upgrade", "heads")
    project = make_project(history.alembic_ini, {"target": url})

    [overview] = overviews.overview_build(projects=[project])

    assert sorted(overview.multiple_heads) == sorted(history.heads)


@pytest.mark.parametrize(
    "scheme", ["postgresql+asyncpg", "postgresql+psycopg", "postgres", "sqlite+aiosqlite"]
)
def test_async_and_alternative_driver_urls_are_read_through_sync_drivers(
    inventory, make_project, sqlite_url, pg_database, scheme
):
    plain = sqlite_url() if scheme.startswith("sqlite") else pg_database()
    alembic(inventory, plain, "upgrade", "head")
    url = make_url(plain).set(drivername=scheme).render_as_string(hide_password=False)
    project = make_project(inventory, {"target": url})

    snapshot = _read(project)

    assert snapshot.status == "current", snapshot.error


def test_a_port_with_nothing_listening_is_unreachable(inventory, make_project, closed_port):
    url = pg_url("anything", password="Hunter2-secret", port=closed_port)
    project = make_project(inventory, {"target": url})

    snapshot = _read(project)

    assert snapshot.status == "unreachable"
    assert "Connection refused" in snapshot.error
    assert "Hunter2-secret" not in snapshot.error


def test_a_wrong_password_is_auth_failed_and_the_message_hides_it(
    inventory, make_project, password_postgres
):
    wrong = "Wr0ng-Pa55word%!"
    url = make_url(pg_url("postgres", user=PASSWORD_ROLE, port=password_postgres)).set(
        password=wrong
    )
    project = make_project(inventory, {"target": url.render_as_string(hide_password=False)})

    snapshot = _read(project)

    assert snapshot.status == "auth_failed"
    assert "password authentication failed" in snapshot.error
    assert wrong not in snapshot.error
    assert "Wr0ng" not in snapshot.error


def test_the_right_password_reads_an_uninitialized_database(
    inventory, make_project, password_postgres
):
    url = make_url(pg_url("postgres", user=PASSWORD_ROLE, port=password_postgres)).set(
        password=PASSWORD
    )
    project = make_project(inventory, {"target": url.render_as_string(hide_password=False)})

    assert _read(project).status == "uninitialized"


def test_a_missing_database_is_an_error_in_words(inventory, make_project):
    project = make_project(inventory, {"target": pg_url("retort_no_such_database")})

    snapshot = _read(project)

    assert snapshot.status == "error"
    assert 'database "retort_no_such_database" does not exist' in snapshot.error


def test_a_missing_sqlite_file_is_unreachable_and_is_not_created(inventory, make_project, tmp_path):
    missing = tmp_path / "nowhere.sqlite"
    project = make_project(inventory, {"target": f"sqlite:///{missing}"})

    snapshot = _read(project)

    assert snapshot.status == "unreachable"
    assert str(missing) in snapshot.error
    assert not missing.exists()


def test_a_file_that_is_not_a_database_is_an_error(inventory, make_project, tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    project = make_project(inventory, {"target": f"sqlite:///{junk}"})

    snapshot = _read(project)

    assert snapshot.status == "error"
    assert "not a SQLite database" in snapshot.error


def test_an_unset_url_variable_is_an_error_in_words(inventory, make_project, monkeypatch):
    monkeypatch.delenv("RETORT_TEST_MISSING_URL", raising=False)
    project = make_project(inventory)
    Environment.objects.create(
        project=project, name="target", slug="target", url_from_env="RETORT_TEST_MISSING_URL"
    )

    snapshot = _read(project)

    assert snapshot.status == "error"
    assert "RETORT_TEST_MISSING_URL" in snapshot.error


def test_a_url_from_an_environment_variable_is_read(
    inventory, make_project, sqlite_url, monkeypatch
):
    url = sqlite_url()
    alembic(inventory, url, "upgrade", "head")
    monkeypatch.setenv("RETORT_TEST_URL", url)
    project = make_project(inventory)
    Environment.objects.create(
        project=project, name="target", slug="target", url_from_env="RETORT_TEST_URL"
    )

    assert _read(project).status == "current"


def test_a_broken_script_directory_makes_every_environment_an_error(
    inventory, make_project, sqlite_url
):
    url = sqlite_url()
    alembic(inventory, url, "upgrade", "head")
    (inventory.parent / "migrations" / "versions").rename(inventory.parent / "moved")
    project = make_project(inventory, {"target": url})

    snapshot = _read(project)

    assert snapshot.status == "error"
    assert "script directory cannot be read" in snapshot.error


def test_reading_reports_a_silent_server_without_delaying_the_others(
    inventory, sqlite_url, silent_server
):
    """One dead database costs its own timeout, not the sum of everyone's."""
    index = load_index(config_from_ini(inventory))
    good = sqlite_url("good")
    alembic(inventory, good, "upgrade", "head")
    targets = [
        core_status.Target(key="dead", url=lambda: pg_url("x", port=silent_server), index=index),
        *[core_status.Target(key=f"good{i}", url=lambda: good, index=index) for i in range(5)],
    ]

    started = time.monotonic()
    states = core_status.read_many(targets, timeout=2.0, workers=8)
    elapsed = time.monotonic() - started

    assert states["dead"].status is core_status.Status.UNREACHABLE
    assert all(states[f"good{i}"].status is core_status.Status.CURRENT for i in range(5))
    assert elapsed < 2.0 + 0.5 + 1.0, f"took {elapsed:.2f}s"


def test_reads_update_the_one_state_row_and_only_a_change_writes_history(demo_project):
    environment = demo_project.environments.get(slug="prod")

    for _ in range(100):
        reads.environment_read(environment=environment)
    alembic(Path(demo_project.alembic_ini), environment.get_url(), "upgrade", "+1")
    reads.environment_read(environment=environment)
    reads.environment_read(environment=environment)

    state = environment.stored_state()
    assert state.status == "behind" and len(state.pending) == 5
    assert CurrentState.objects.filter(environment=environment).count() == 1
    first, change = environment.changes.order_by("at")
    assert (first.from_status, first.status, first.heads) == ("", "behind", [inv.PROD_TARGET])
    assert change.from_heads == [inv.PROD_TARGET] and change.heads == state.heads
    assert change.out_of_band and change.job is None  # no Retort job explains it
    assert state.changed_at == change.at < state.checked_at


def test_a_read_that_lands_after_a_newer_one_changes_nothing(demo_project):
    prod = demo_project.environments.get(slug="prod")
    newer = reads.environment_read(environment=prod)
    older = core_status.EnvironmentState(
        status=core_status.Status.UNREACHABLE,
        error="late",
        checked_at=newer.checked_at - timedelta(seconds=5),
    )

    reads.reads_store([prod], {prod.pk: older})

    state = prod.stored_state()
    assert (state.status, state.checked_at) == ("behind", newer.checked_at)
    assert prod.changes.count() == 1


def test_a_failed_read_keeps_what_was_known_and_the_recovery_is_no_revision_change(demo_project):
    prod = demo_project.environments.get(slug="prod")
    reads.environment_read(environment=prod)
    url = prod.get_url()
    prod.set_url("postgresql://nobody@127.0.0.1:1/none")
    prod.save()
    failed = reads.environment_read(environment=prod)
    prod.set_url(url)
    prod.save()
    recovered = reads.environment_read(environment=prod)

    assert failed.status == "unreachable" and failed.known_heads == [inv.PROD_TARGET]
    assert recovered.status == "behind"
    statuses = list(prod.changes.order_by("at").values_list("from_status", "status"))
    assert statuses == [("", "behind"), ("behind", "unreachable"), ("unreachable", "behind")]
    assert not any(change.revisions_changed for change in prod.changes.all())
    assert not AuditEvent.objects.filter(action="revision_changed").exists()
