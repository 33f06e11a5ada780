"""Tenants kept as schemas of one real PostgreSQL database: each has its own version table in its
schema, alembic is told the schema (-x tenant=…, search_path), a job and its backup touch that
schema alone, tenants migrate side by side, and a discovery finds the schemas."""

from __future__ import annotations

import contextlib
import uuid

import psycopg2
import pytest
from django.db import transaction

from environments import discovery, execution, planning, transitions
from environments.core.versions import read_versions
from environments.discovery_forms import DiscoveryForm
from environments.forms import EnvironmentForm
from environments.models import Discovery, Environment, Job, Project
from examples.inventory import revisions as inv
from tests.conftest import read_all

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shared(pg_database) -> tuple[str, list[str]]:
    """One database with three tenant schemas (and the tables of nobody in public)."""
    url = pg_database()
    names = [f"tenant_{uuid.uuid4().hex[:6]}_{n}" for n in ("a", "b", "c")]
    with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cursor:
        for name in names:
            cursor.execute(f'CREATE SCHEMA "{name}"')
        cursor.execute("CREATE TABLE public.keep_me (id int)")
        db.commit()
    return url, names


@pytest.fixture
def schema_project(inventory, shared, settings) -> Project:
    settings.CELERY_TASK_DEFAULT_QUEUE = f"retort-test-unconsumed-{uuid.uuid4().hex[:6]}"
    url, names = shared
    project = Project.objects.create(
        name="schemas", slug="schemas", alembic_ini=str(inventory), version_table_schema="{schema}"
    )
    for position, name in enumerate(names):
        environment = Environment(
            project=project, name=name, slug=name.replace("_", "-"), position=position, schema=name
        )
        environment.set_url(url)
        environment.save()
    return project


def tables_in(url: str, schema: str) -> list[str]:
    with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
            [schema],
        )
        return [row[0] for row in cursor.fetchall()]


def heads_in(url: str, schema: str) -> list[str]:
    state = read_versions(url, version_table_schema=schema, timeout=5)
    assert state.failure is None, state.message
    return sorted(state.heads or ())


def run(environment: Environment, user, target: str, kind: str = "upgrade", **request) -> Job:
    job = planning.job_request(
        environment=environment, kind=kind, target=target, user=user, **request
    )
    with transaction.atomic():
        job = transitions.move(job, Job.Status.QUEUED, event="job_queued", user=user)
    return execution.job_run(job_id=job.pk)


def test_an_upgrade_of_one_schema_tenant_changes_that_schema_alone(schema_project, shared, users):
    url, (a, b, c) = shared
    read_all(schema_project)
    tenant = schema_project.environments.get(schema=a)
    assert tenant.stored_state().status == "uninitialized"

    job = run(tenant, users["alice"], inv.STAGING_TARGET)

    assert job.status == "succeeded", job.error
    assert "-x tenant=" + a in "\n".join(job.log_lines.values_list("text", flat=True))
    assert heads_in(url, a) == [inv.STAGING_TARGET]  # its version table is in its schema
    assert "users" in tables_in(url, a) and "alembic_version" in tables_in(url, a)
    assert tables_in(url, b) == [] and tables_in(url, c) == []
    assert tables_in(url, "public") == ["keep_me"]
    tenant.refresh_from_db()
    assert tenant.stored_state().heads == [inv.STAGING_TARGET]


def test_without_an_x_argument_search_path_alone_puts_the_tenant_in_its_schema(
    schema_project, shared, users
):
    url, (a, b, _) = shared
    Project.objects.filter(pk=schema_project.pk).update(tenant_x_arg="")
    tenant = Environment.objects.select_related("project").get(schema=b)

    job = run(tenant, users["alice"], inv.PROD_TARGET)

    assert job.status == "succeeded", job.error
    assert "-x tenant" not in "\n".join(job.log_lines.values_list("text", flat=True))
    assert heads_in(url, b) == [inv.PROD_TARGET]
    assert tables_in(url, a) == [] and tables_in(url, "public") == ["keep_me"]


def test_a_schema_tenants_backup_and_restore_touch_its_schema_alone(schema_project, shared, users):
    url, (a, b, _) = shared
    first, second = (
        Environment.objects.select_related("project").get(schema=name) for name in (a, b)
    )
    assert run(second, users["alice"], inv.PROD_TARGET).status == "succeeded"
    assert run(first, users["alice"], inv.PROD_TARGET).status == "succeeded"
    upgrade = run(first, users["alice"], inv.STAGING_TARGET)
    assert upgrade.status == "succeeded", upgrade.error
    assert upgrade.backup is not None
    with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cursor:
        cursor.execute(f"INSERT INTO \"{b}\".users (id, name) VALUES (7, 'Ada')")
        db.commit()

    restore = run(first, users["alice"], "", kind="restore", restore_from=upgrade.backup)

    assert restore.status == "succeeded", restore.error
    assert heads_in(url, a) == [inv.PROD_TARGET]
    assert "shipments" not in tables_in(url, a)  # what the upgrade made is gone
    assert heads_in(url, b) == [inv.PROD_TARGET]  # the other tenant kept its row
    with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cursor:
        cursor.execute(f'SELECT name FROM "{b}".users')
        assert cursor.fetchall() == [("Ada",)]
    assert tables_in(url, "public") == ["keep_me"]


def test_tenants_of_one_database_take_separate_migration_locks(schema_project, shared, users):
    url, (a, b, _) = shared
    first, second = (
        Environment.objects.select_related("project").get(schema=name) for name in (a, b)
    )
    assert first.lock_key != second.lock_key
    with contextlib.closing(psycopg2.connect(url)) as holder, holder.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [first.lock_key])  # a run on tenant a

        beside = run(second, users["alice"], inv.PROD_TARGET)
        blocked = run(first, users["alice"], inv.PROD_TARGET)

    assert beside.status == "succeeded", beside.error
    assert blocked.status == "failed"
    assert "Another process holds Retort's migration lock" in blocked.error
    assert tables_in(url, a) == []


def test_a_discovery_of_schemas_registers_each_with_its_schema(schema_project, shared):
    url, names = shared
    found = Discovery(
        project=schema_project,
        name="schemas",
        kind=Discovery.Kind.SCHEMAS,
        query=(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\\_%' "
            "UNION ALL SELECT 'tenant bad name' ORDER BY 1"
        ),
    )
    found.server_url = url
    found.url_template = url
    found.save()
    Environment.objects.filter(project=schema_project).delete()

    result = discovery.discovery_run(discovery=found)

    assert sorted(result.added) == sorted(names)
    assert Environment.objects.get(name=names[0]).schema == names[0]
    assert any("'tenant bad name' cannot be a tenant's schema" in why for why in result.skipped)


def test_the_forms_refuse_a_schema_name_that_needs_quoting_and_a_schema_on_sqlite(
    schema_project, tmp_path
):
    odd = EnvironmentForm(
        data={
            "project": schema_project.pk,
            "name": "odd",
            "slug": "odd",
            "position": 9,
            "url": "postgresql://postgres@127.0.0.1:5432/x",
            "schema": 'x"; DROP SCHEMA public; --',
            "required_approvals": 0,
            "keep_backups": 5,
            "approval_expiry_hours": 24,
            "promotion_min_hours": 0,
        }
    )
    assert not odd.is_valid()
    assert "cannot be a tenant's schema" in odd.errors["schema"][0]

    lite = EnvironmentForm(
        data=odd.data | {"schema": "tenant_1", "url": f"sqlite:///{tmp_path / 'x.db'}"}
    )
    assert not lite.is_valid()
    assert lite.errors["schema"] == ["Tenants kept as schemas live in a PostgreSQL database."]


def test_a_schema_discovery_needs_no_name_in_its_template(schema_project, shared):
    url, _ = shared
    form = DiscoveryForm(
        data={
            "project": schema_project.pk,
            "name": "by-schema",
            "kind": "schemas",
            "server_url": url,
            "url_template": url,
            "query": "SELECT datname FROM pg_database WHERE datname LIKE 'tenant\\_%' ORDER BY 1",
        }
    )
    assert form.is_valid(), form.errors
    assert form.save().query.startswith("SELECT nspname FROM pg_namespace")
