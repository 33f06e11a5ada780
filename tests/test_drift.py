"""Drift between environments (issue #7): revisions in words, schema differences between
environments at the same revision, and the CI gate's exit codes — on the demo's real SQLite
databases and per-test PostgreSQL ones."""

from __future__ import annotations

import io
import json

import pytest
import sqlalchemy as sa
from django.core.management import call_command

from environments.core.database_urls import sync_url
from examples.inventory import revisions as inv
from tests.conftest import alembic

pytestmark = pytest.mark.django_db


def drift_check(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("drift_check", *args, stdout=out)
    return exited.value.code, out.getvalue()


def execute(url: str, statement: str) -> None:
    engine = sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text(statement))
    engine.dispose()


def test_the_demo_drifts_by_revisions_said_in_words(demo_project):
    code, out = drift_check("inventory", "--json")

    assert code == 1
    findings = json.loads(out)
    assert {f["kind"] for f in findings} == {"revisions"}
    by_pair = {tuple(f["environments"]): f["detail"] for f in findings}
    assert by_pair[("prod", "staging")] == (
        "prod lacks these 3 revisions that staging has: "
        f"{inv.ADD_USERS_EMAIL}, {inv.DROP_PRODUCTS_LEGACY_FLAG}, {inv.CREATE_SHIPMENTS}"
    )
    assert by_pair[("staging", "dev")].startswith("staging lacks these 3 revisions that dev has")
    assert set(findings[0]) == {"kind", "environments", "object", "detail", "change", "present"}


def test_environments_at_one_revision_with_one_schema_report_no_drift(
    inventory, make_project, pg_database
):
    urls = {"staging": pg_database(), "prod": pg_database()}
    for url in urls.values():
        alembic(inventory, url, "upgrade", "head")
    make_project(inventory, urls)

    code, out = drift_check("inventory")

    assert code == 0
    assert out.strip() == (
        "No drift in inventory (schemas compared: staging=prod; "
        "with what their migrations build: staging, prod)."
    )


def test_a_hand_added_index_between_twins_is_drift(inventory, make_project, pg_database):
    urls = {"staging": pg_database(), "prod": pg_database()}
    for url in urls.values():
        alembic(inventory, url, "upgrade", "head")
    make_project(inventory, urls)
    execute(urls["prod"], "CREATE INDEX ix_by_hand ON orders (user_id, status)")

    code, out = drift_check("inventory", "--env", "prod", "--json")

    assert code == 1
    assert json.loads(out) == [
        {
            "kind": "schema",
            "environments": ["staging", "prod"],
            "object": "orders",
            "detail": "prod has index ix_by_hand on orders (user_id, status); staging does not",
            "change": "index",
            "present": None,
        },
        {
            "kind": "expected",
            "environments": ["prod"],
            "object": "orders",
            "detail": "prod has index ix_by_hand on orders (user_id, status) that no migration "
            "creates",
            "change": "index",
            "present": True,
        },
    ]


def test_an_unknown_revision_is_named(demo_project):
    execute(
        demo_project.environments.get(slug="dev").get_url(),
        "UPDATE alembic_version SET version_num='feedface0000'",
    )

    code, out = drift_check("inventory", "--env", "dev")

    assert code == 1
    assert "[unknown_revision] dev holds 1 revision unknown to the scripts: feedface0000" in out


def test_an_unreadable_database_exits_2_in_words(inventory, make_project, sqlite_url, closed_port):
    make_project(
        inventory,
        {
            "staging": sqlite_url("staging"),
            "prod": f"postgresql://u:S3cret-pw@127.0.0.1:{closed_port}/x",
        },
    )
    alembic(inventory, sqlite_url("staging"), "upgrade", "head")

    code, out = drift_check("inventory")

    assert code == 2
    assert "[unreadable] Cannot reach the database" in out and "S3cret-pw" not in out


def test_sqlite_and_postgresql_twins_are_compared_only_when_asked(
    inventory, make_project, sqlite_url, pg_database
):
    urls = {"staging": sqlite_url("staging"), "prod": pg_database()}
    for url in urls.values():
        alembic(inventory, url, "upgrade", "head")
    make_project(inventory, urls)

    assert "(schemas compared: none;" in drift_check("inventory")[1]
    code, out = drift_check("inventory", "--cross-dialect")
    assert code == 0 and "staging=prod" in out


# --- the schema each revision should have --------------------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_expected_schema_at_every_revision_is_what_alembic_builds(
    dialect, inventory, make_project, sqlite_url, pg_database
):
    from environments import expected
    from environments.core.schema import compare_schemas, read_schema

    make = (lambda name: sqlite_url(name)) if dialect == "sqlite" else (lambda name: pg_database())
    project = make_project(inventory, {"prod": make("prod")})
    prod = project.environments.get()

    for revision in inv.ALL_REVISIONS:
        fresh = make(f"fresh-{revision}")
        alembic(inventory, fresh, "upgrade", revision)
        built = expected.build(environment=prod, heads=[revision], dialect=dialect)

        assert built.error == "", built.error
        expected_schema = expected.schema_from_json(built.schema_json)
        assert expected_schema.tables, revision
        assert compare_schemas(expected_schema, read_schema(fresh)) == [], revision
    assert expected.build(environment=prod, heads=[inv.HEAD], dialect=dialect).pk == built.pk


def test_a_changed_migration_builds_its_expected_schema_anew(demo_project, inventory):
    from environments import expected

    prod = demo_project.environments.get(slug="prod")
    first = expected.build(environment=prod, heads=[inv.PROD_TARGET], dialect="sqlite")
    index, _ = demo_project.load_scripts()
    path = index.revisions[inv.CREATE_USERS].path
    path.write_text(
        path.read_text().replace(
            'sa.Column("name", sa.String(length=100), nullable=False),',
            'sa.Column("name", sa.String(length=100), nullable=False),\n'
            '        sa.Column("nick", sa.String(20)),',
        )
    )

    again = expected.build(environment=prod, heads=[inv.PROD_TARGET], dialect="sqlite")

    assert again.pk != first.pk
    assert "nick" in again.schema_json and "nick" not in first.schema_json


def test_a_column_dropped_by_hand_is_missed_in_the_words_of_its_migrations(demo_project):
    execute(
        demo_project.environments.get(slug="prod").get_url(), "ALTER TABLE orders DROP COLUMN qty"
    )

    code, out = drift_check("inventory", "--env", "prod")

    assert code == 1
    assert "[expected] prod lacks column orders.qty that its migrations create" in out


def test_a_migration_that_fails_on_a_scratch_database_is_said_in_words(demo_project, inventory):
    index, _ = demo_project.load_scripts()
    path = index.revisions[inv.CREATE_USERS].path
    path.write_text(
        path.read_text().replace(
            "op.create_table(", 'op.execute("SELEC nonsense")\n    op.create_table(', 1
        )
    )

    code, out = drift_check("inventory", "--env", "prod")

    assert code == 2
    assert "The schema prod should have could not be built: The migrations failed" in out


# --- the scheduled check --------------------------------------------------------------------


def test_the_scheduled_check_records_drift_once_and_audits_it_appearing_and_clearing(
    client, demo_project, users
):
    from environments import tasks
    from environments.models import AuditEvent

    prod_url = demo_project.environments.get(slug="prod").get_url()
    assert tasks.drift_check_all() == 1
    first = AuditEvent.objects.filter(action="drift_found").count()
    tasks.drift_check_all()
    assert AuditEvent.objects.filter(action="drift_found").count() == first == 1  # once

    execute(prod_url, "CREATE INDEX ix_by_hand ON orders (qty)")
    tasks.drift_check_all()
    found = AuditEvent.objects.filter(action="drift_found").order_by("-seq").first()
    assert found.details["findings"] == [
        "prod has index ix_by_hand on orders (qty) that no migration creates"
    ]
    client.force_login(users["vera"])
    page = client.get("/").content.decode()
    assert page.count('data-testid="drift-badge"') == 1 and "drift: 1 finding<" in page

    execute(prod_url, "DROP INDEX ix_by_hand")
    tasks.drift_check_all()
    cleared = AuditEvent.objects.get(action="drift_cleared")
    assert cleared.details["findings"] == found.details["findings"]
    assert 'data-testid="drift-badge"' not in client.get("/").content.decode()


def test_a_database_that_cannot_be_read_does_not_clear_its_drift(demo_project):
    from environments import drift
    from environments.models import AuditEvent

    prod = demo_project.environments.get(slug="prod")
    execute(prod.get_url(), "CREATE INDEX ix_by_hand ON orders (qty)")
    drift.drift_record(project=demo_project)
    prod.set_url("sqlite:////nonexistent/prod.sqlite")
    prod.save()

    appeared, cleared = drift.drift_record(project=demo_project)

    assert cleared == [] and appeared == []
    assert not AuditEvent.objects.filter(action="drift_cleared").exists()
