"""A rollout across 60 real targets — 20 SQLite files, 20 PostgreSQL databases and 20 schemas of
one PostgreSQL database — run by 2 real Celery worker processes over a real Redis broker, in 3
waves (a canary of 2, then 18 at 4 at a time, then the rest at 8). What each database holds is
read directly, not through Retort; each upgrade leaves a row in a marker table, so a target
upgraded twice would show it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from environments import discovery, rollout_plans, rollout_specs, rollouts
from environments.models import Discovery, Environment, Job, Project, Rollout
from tests.conftest import EXAMPLE, pg_admin, pg_url, wait_for, write_revision

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

WAVES = ["canary: count=2 parallel=2", "early: count=18 parallel=4", "rest: parallel=8"]

# r2 waits while the hold file exists (so a worker can be killed in the middle of it), and
# says so with a file named after alembic's own process
R2_BODY = """import os, pathlib, time
    op.execute("INSERT INTO upgrade_marker (revision) VALUES ('r2')")
    hold, until = os.environ.get("RETORT_TEST_HOLD", ""), time.monotonic() + 60
    if hold and os.path.exists(hold):
        pathlib.Path(f"{hold}-{os.getpid()}").touch()
    while hold and os.path.exists(hold) and time.monotonic() < until:
        time.sleep(0.05)"""


@pytest.fixture
def project_files(tmp_path) -> Path:
    """A small project with the sample's env.py (-x tenant=<schema> sets search_path): r1 makes
    the marker table, r2 writes a row in it, r3 makes a table `items` and writes a row."""
    root = tmp_path / "saas"
    (root / "migrations" / "versions").mkdir(parents=True)
    shutil.copy(EXAMPLE / "alembic.ini", root / "alembic.ini")
    shutil.copy(EXAMPLE / "migrations" / "env.py", root / "migrations" / "env.py")
    versions = root / "migrations" / "versions"
    write_revision(
        versions,
        "r1",
        None,
        message="marker table",
        body='op.create_table("upgrade_marker", sa.Column("id", sa.Integer, primary_key=True), '
        'sa.Column("revision", sa.String(10)))',
    )
    write_revision(versions, "r2", "r1", message="slow change", body=R2_BODY)
    write_revision(
        versions,
        "r3",
        "r2",
        message="items",
        body='op.create_table("items", sa.Column("id", sa.Integer, primary_key=True))\n'
        "    op.execute(\"INSERT INTO upgrade_marker (revision) VALUES ('r3')\")",
    )
    return root / "alembic.ini"


@pytest.fixture
def sixty(project_files, tmp_path) -> tuple[Project, dict[str, tuple[str, str, str | None]]]:
    """t01…t60 in turn a SQLite file, a PostgreSQL database and a schema of one shared
    database, at base; returns the project and each tenant's (kind, url, schema)."""
    prefix = f"rt_fleet_{uuid.uuid4().hex[:6]}_"
    shared = prefix + "schemas"
    made = [shared]
    with contextlib.closing(pg_admin()) as admin, admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{shared}"')
    project = Project.objects.create(
        name="saas", slug="saas", alembic_ini=str(project_files), version_table_schema="{schema}"
    )
    tenants, rows = {}, []
    schemas = []
    for number in range(1, 61):
        name = f"t{number:02}"
        kind = ("sqlite", "postgresql", "schema")[number % 3]
        schema = None
        if kind == "sqlite":
            sqlite3.connect(tmp_path / f"{name}.sqlite").close()  # a new tenant: empty
            url = f"sqlite:///{tmp_path / f'{name}.sqlite'}"
        elif kind == "postgresql":
            made.append(prefix + name)
            url = pg_url(prefix + name)
        else:
            schema = f"tenant_{name}"
            schemas.append(schema)
            url = pg_url(shared)
        tenants[name] = (kind, url, schema)
        environment = Environment(
            project=project,
            name=name,
            slug=name,
            position=number,
            schema=schema or "",
            labels={"kind": kind},
        )
        environment.set_url(url)
        rows.append(environment)
    with contextlib.closing(pg_admin()) as admin, admin.cursor() as cursor:
        for database in made[1:]:
            cursor.execute(f'CREATE DATABASE "{database}"')
    with contextlib.closing(psycopg2.connect(pg_url(shared))) as db, db.cursor() as cursor:
        for schema in schemas:
            cursor.execute(f'CREATE SCHEMA "{schema}"')
        db.commit()
    Environment.objects.bulk_create(rows)
    project.prefix = prefix  # type: ignore[attr-defined]
    yield project, tenants
    with contextlib.closing(pg_admin()) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [prefix + "%"])
        for (database,) in cursor.fetchall():
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def direct(kind: str, url: str, schema: str | None, sql: str) -> list[tuple]:
    """Rows of `sql` run on the tenant itself, without Retort ([] when its tables are not
    there)."""
    if kind == "sqlite":
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            try:
                return db.execute(sql).fetchall()
            except sqlite3.OperationalError:
                return []
    with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cursor:
        if schema:
            cursor.execute(f'SET search_path TO "{schema}"')
        try:
            cursor.execute(sql)
        except psycopg2.errors.UndefinedTable:
            return []
        return cursor.fetchall()


def version_of(tenant) -> list[str]:
    return sorted(row[0] for row in direct(*tenant, "SELECT version_num FROM alembic_version"))


def markers(tenant, revision: str) -> int:
    rows = direct(*tenant, f"SELECT count(*) FROM upgrade_marker WHERE revision = '{revision}'")
    return rows[0][0] if rows else 0


def workers(start_worker, tmp_path, **env) -> str:
    """Two worker processes on one queue; the first runs beat (reaper, dispatcher, tick)."""
    fast = {
        "RETORT_HEARTBEAT_SECONDS": "1",
        "RETORT_HEARTBEAT_TIMEOUT": "6",
        "RETORT_REAPER_SECONDS": "1",
        "RETORT_ROLLOUT_TICK_SECONDS": "1",
        "RETORT_REDISPATCH_SECONDS": "5",
        "RETORT_DISPATCH_SECONDS": "1",
        **env,
    }
    queue = start_worker(beat=True, env=fast)
    start_worker(queue=queue, env=fast)
    return queue


def started(project: Project, user, target: str) -> Rollout:
    rollout = rollout_plans.rollout_request(
        project=project,
        target=target,
        user=user,
        waves=[rollout_specs.wave_parse(text) for text in WAVES],
        take_backup=False,
    )
    assert wait_for(lambda: Rollout.objects.get(pk=rollout.pk).status != "planning", seconds=120)
    rollout.refresh_from_db()
    assert rollout.status == "planned", rollout.note
    blocked = rollout.targets.filter(state="blocked").values_list("environment__name", "note")
    assert not blocked, list(blocked)
    return rollouts.rollout_submit(rollout=rollout, user=user)


def ended(rollout: Rollout, *statuses: str, seconds: float = 300) -> Rollout:
    statuses = statuses or ("completed",)
    assert wait_for(
        lambda: Rollout.objects.get(pk=rollout.pk).status in statuses, seconds=seconds
    ), f"rollout #{rollout.pk}: {Rollout.objects.get(pk=rollout.pk).status}"
    rollout.refresh_from_db()
    return rollout


def ancestors(pid: int) -> list[int]:
    """The processes above `pid` (alembic runs in a child of its worker, or of the worker's
    warm parent)."""
    found = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        while pid > 1:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rpartition(")")[2].split()[1])
            found.append(pid)
    return found


def test_three_waves_bring_sixty_targets_to_head_and_a_killed_worker_costs_nothing(
    sixty, users, start_worker, settings, tmp_path
):
    project, tenants = sixty
    hold = tmp_path / "hold"
    settings.CELERY_TASK_DEFAULT_QUEUE = workers(start_worker, tmp_path, RETORT_TEST_HOLD=str(hold))
    rollout = started(project, users["alice"], "r2")
    waves = list(rollout.waves.order_by("number"))
    assert [wave.targets.count() for wave in waves] == [2, 18, 40]

    # in the third wave, hold r2 and kill the worker process running one of its targets
    assert wait_for(lambda: Rollout.objects.get(pk=rollout.pk).waves.get(number=3).started_at)
    hold.touch()
    victim, alembic = None, None

    def one_held() -> bool:  # a job whose alembic waits inside r2, its transaction open
        nonlocal victim, alembic
        held = [int(p.name.split("-")[1]) for p in tmp_path.glob("hold-*")]
        waiting = {ancestor: pid for pid in held for ancestor in ancestors(pid)}
        victim = Job.objects.filter(rollout=rollout, status="running", worker_pid__in=waiting)
        victim = victim.first()
        alembic = waiting[victim.worker_pid] if victim else None
        return victim is not None

    assert wait_for(one_held, seconds=60)
    time.sleep(0.5)
    os.kill(victim.worker_pid, signal.SIGKILL)
    # SIGKILL is delivered when the kernel gets to it: let go of r2 only once the alembic of the
    # killed worker is gone too (it dies with its worker), its transaction rolled back
    assert wait_for(lambda: not Path(f"/proc/{alembic}").exists(), seconds=10)
    hold.unlink()

    rollout = ended(rollout)

    assert rollout.note == "60 of 60 hold the target."
    for name, tenant in tenants.items():
        assert version_of(tenant) == ["r2"], name
        assert markers(tenant, "r2") == 1, f"{name} ran r2 {markers(tenant, 'r2')} times"
    victim.refresh_from_db()
    assert victim.status == "interrupted"
    target = rollout.targets.get(environment=victim.environment)
    assert target.state == "succeeded" and target.attempts == 2
    for earlier, later in zip(waves, waves[1:], strict=False):
        earlier.refresh_from_db()
        later.refresh_from_db()
        assert earlier.finished_at <= later.started_at

    # a tenant created on the server appears after the next discovery run
    found = Discovery(
        project=project,
        name="databases",
        query=f"SELECT datname FROM pg_database WHERE datname LIKE '{project.prefix}t%'",
    )
    found.server_url = pg_url("postgres")
    found.url_template = pg_url("{name}")
    found.save()
    discovery.discovery_run(discovery=found)
    with contextlib.closing(pg_admin()) as admin, admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{project.prefix}tenant_061"')
    assert not Environment.objects.filter(name=f"{project.prefix}tenant_061").exists()

    run = discovery.discovery_run(discovery=found)

    assert run.added == [f"{project.prefix}tenant_061"]


def test_a_failure_in_wave_two_stops_the_rollout_and_retry_and_resume_finish_it(
    sixty, users, start_worker, settings, tmp_path, client_alice
):
    project, tenants = sixty
    settings.CELERY_TASK_DEFAULT_QUEUE = workers(start_worker, tmp_path)
    broken = tenants["t07"]  # a PostgreSQL database, in the second wave
    assert broken[0] == "postgresql"
    with contextlib.closing(psycopg2.connect(broken[1])) as db, db.cursor() as cursor:
        cursor.execute("CREATE TABLE items (id int)")  # the table r3 makes is there already
        db.commit()

    rollout = ended(started(project, users["alice"], "heads"), "stopped")

    assert "Stopped in wave 2 (early): 1 target failed, t07 first" in rollout.note
    assert 'relation "items" already exists' in rollout.note
    third = rollout.waves.get(number=3)
    assert third.started_at is None
    for target in third.targets.select_related("environment"):
        assert version_of(tenants[target.environment.name]) == [], target.environment.name
    assert version_of(broken) == []  # its transaction rolled back whole
    page = client_alice.get(rollout.get_absolute_url()).content.decode()
    failing = rollout.targets.get(environment__name="t07").job
    assert "First failure: <strong>t07</strong>" in page
    assert f'href="/jobs/{failing.pk}/" id="failing-job"' in page
    assert "relation &quot;items&quot; already exists" in page

    with contextlib.closing(psycopg2.connect(broken[1])) as db, db.cursor() as cursor:
        cursor.execute("DROP TABLE items")
        db.commit()
    assert rollouts.rollout_retry_failed(rollout=rollout, user=users["alice"]) == 1
    rollouts.rollout_resume(rollout=rollout, user=users["alice"])
    rollout = ended(rollout)

    assert rollout.note == "60 of 60 hold the target."
    for name, tenant in tenants.items():
        assert version_of(tenant) == ["r3"], name
        assert (markers(tenant, "r2"), markers(tenant, "r3")) == (1, 1), name
