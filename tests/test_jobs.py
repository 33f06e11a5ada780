"""Jobs run by a real Celery worker over Redis, against real PostgreSQL and SQLite targets:
backup, upgrade, failure, downgrade, stamp, restore, races, a killed worker, a wrong password."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction

from environments import approvals, execution, planning, transitions
from environments.core.versions import read_versions
from environments.models import AuditEvent, Backup, Environment, Job, Project
from examples.inventory import revisions as inv
from tests.conftest import PASSWORD, PASSWORD_ROLE, alembic, pg_url, wait_for, write_revision

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def finished(job: Job, *, seconds: float = 120.0) -> Job:
    assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, seconds=seconds), (
        f"job #{job.pk} did not finish: {Job.objects.get(pk=job.pk).status}; log:\n"
        + "\n".join(job.log_lines.values_list("text", flat=True))
    )
    job.refresh_from_db()
    return job


def heads_of(url: str) -> list[str]:
    state = read_versions(url, timeout=5)
    assert state.failure is None, state.message
    return sorted(state.heads or ())


def tables_and_rows(url: str) -> dict[str, list[tuple]]:
    """Every table of the database with every row, to compare states table by table."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            names = [
                r[0]
                for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"
                )
            ]
            return {n: sorted(db.execute(f'SELECT * FROM "{n}"').fetchall()) for n in names}
    with psycopg2.connect(url.replace("postgresql+psycopg2", "postgresql")) as db:
        cursor = db.cursor()
        cursor.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' ORDER BY table_name"
        )
        names = [r[0] for r in cursor.fetchall()]
        found = {}
        for name in names:
            cursor.execute(f'SELECT * FROM "{name}" ORDER BY 1')
            found[name] = [tuple(map(str, row)) for row in cursor.fetchall()]
        return found


def seed_rows(url: str) -> None:
    """Business data the migrations must carry (users and products exist from PROD_TARGET on)."""
    statements = [
        "INSERT INTO users (id, name) VALUES (1, 'Ada'), (2, 'Grace')",
        "INSERT INTO products (id, name) VALUES (10, 'Retort'), (11, 'Flask')",
    ]
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            for statement in statements:
                db.execute(statement)
        return
    with psycopg2.connect(url) as db:
        for statement in statements:
            db.cursor().execute(statement)


@pytest.fixture
def worker(start_worker, settings):
    """A real worker on a private queue; the services send their tasks there."""

    def start(**kwargs) -> str:
        queue = start_worker(**kwargs)
        settings.CELERY_TASK_DEFAULT_QUEUE = queue
        return queue

    return start


@pytest.fixture
def pg_project(inventory, make_project, pg_database):
    """The sample project with a PostgreSQL prod at PROD_TARGET holding some rows."""

    def make(at: str = inv.PROD_TARGET) -> tuple[Project, Environment, str]:
        url = pg_database()
        alembic(inventory, url, "upgrade", at)
        seed_rows(url)
        project = make_project(inventory, {"prod": url})
        return project, project.environments.get(), url

    return make


def alembic_processes(ini: Path) -> list[int]:
    """Processes running alembic for this project (its private copy's folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if "alembic" in cmdline and cwd == str(ini.parent):
            found.append(int(proc.name))
    return found


def sleeping(url: str) -> bool:
    """A session on the target is still running the slow migration's pg_sleep."""
    with psycopg2.connect(url) as db:
        cursor = db.cursor()
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0] > 0


def run(environment: Environment, users, kind: str, target: str = "", **kwargs) -> Job:
    job = planning.job_request(
        environment=environment, kind=kind, target=target, user=users["bob"], **kwargs
    )
    return finished(approvals.job_queue(job=job, user=users["bob"]))


def actions_of(job: Job) -> list[str]:
    return list(
        AuditEvent.objects.filter(job_id=job.pk).order_by("seq").values_list("action", flat=True)
    )


# --- PostgreSQL ----------------------------------------------------------------------------


def test_upgrade_prod_to_head_backs_up_first_and_the_backup_restores_the_old_state(
    pg_project, worker, users
):
    worker()
    _, prod, url = pg_project()
    before = tables_and_rows(url)

    job = run(prod, users, "upgrade", "heads")

    assert job.status == "succeeded", job.error
    assert heads_of(url) == [inv.HEAD] == job.result_heads
    assert job.progress_done == job.progress_total == 6
    backup = job.backup
    assert backup is not None and Path(backup.path).exists()
    assert backup.size == Path(backup.path).stat().st_size > 0
    assert "pg_restore" in backup.verified and backup.heads == [inv.PROD_TARGET]
    log = "\n".join(job.log_lines.values_list("text", flat=True))
    assert log.index("Backup #") < log.index("Running upgrade")
    assert actions_of(job) == [
        "job_planned",
        "job_queued",
        "job_started",
        "revision_changed",
        "job_succeeded",
    ]
    assert not AuditEvent.objects.filter(action="out_of_band_change").exists()
    assert tables_and_rows(url) != before

    upgraded = tables_and_rows(url)
    restore = run(prod, users, "restore", restore_from=backup)

    assert restore.status == "succeeded", restore.error
    assert tables_and_rows(url) == before
    assert heads_of(url) == [inv.PROD_TARGET]
    # the restore backed up what it replaced first, so the restore can be undone too
    assert restore.backup is not None and restore.backup.heads == [inv.HEAD]
    undo = run(prod, users, "restore", restore_from=restore.backup)
    assert undo.status == "succeeded", undo.error
    assert tables_and_rows(url) == upgraded


def test_a_migration_failing_half_way_changes_nothing_and_keeps_the_backup(
    pg_project, worker, users, inventory
):
    worker()
    _, prod, url = pg_project(at=inv.HEAD)
    write_revision(
        inventory.parent / "migrations" / "versions",
        "badbadbad001",
        inv.HEAD,
        body="op.create_table('half_way', sa.Column('id', sa.Integer))\n"
        "    op.execute('SELECT 1/0')",
    )
    before = tables_and_rows(url)

    job = run(prod, users, "upgrade", "heads")

    assert job.status == "failed"
    assert job.exit_code not in (0, None)
    # the cause leads, then where, the state now, and what to do next
    assert job.error.startswith("division by zero")
    assert "— in revision badbadbad001 (1 of 1)." in job.error
    assert (
        f"The database holds {inv.HEAD} now; nothing of badbadbad001 was committed "
        "(PostgreSQL rolled it back)." in job.error
    )
    assert f"restore backup #{job.backup_id} taken before the run" in job.error
    assert heads_of(url) == [inv.HEAD]
    assert tables_and_rows(url) == before  # transactional DDL: no half_way table either
    assert Path(job.backup.path).exists()

    restore = run(prod, users, "restore", restore_from=job.backup)
    assert restore.status == "succeeded", restore.error
    assert tables_and_rows(url) == before


def test_downgrade_to_a_revision(pg_project, worker, users):
    worker()
    _, prod, url = pg_project(at=inv.STAGING_TARGET)

    job = run(prod, users, "downgrade", inv.PROD_TARGET)

    assert job.status == "succeeded", job.error
    assert heads_of(url) == [inv.PROD_TARGET]
    assert job.progress_done == 3
    assert job.backup is not None


def test_stamp_repairs_a_version_table_holding_an_unknown_revision(pg_project, worker, users):
    worker()
    _, prod, url = pg_project()
    with psycopg2.connect(url) as db:
        db.cursor().execute("UPDATE alembic_version SET version_num = 'deadbeef0000'")

    with pytest.raises(transitions.Refused, match="deadbeef0000, which the scripts do not have"):
        planning.job_request(environment=prod, kind="upgrade", target="heads", user=users["bob"])
    job = run(prod, users, "stamp", inv.PROD_TARGET)

    assert job.status == "succeeded", job.error
    assert heads_of(url) == [inv.PROD_TARGET]
    assert job.backup is None  # a stamp touches only the version table


def test_two_jobs_requested_at_once_for_one_environment_exactly_one_runs(pg_project, worker, users):
    worker()
    _, prod, url = pg_project()
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def request() -> None:
        try:
            job = planning.job_request(
                environment=prod, kind="upgrade", target="heads", user=users["bob"]
            )
            barrier.wait()
            outcomes.append(approvals.job_queue(job=job, user=users["bob"]))
        except transitions.Refused as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    queued = [o for o in outcomes if isinstance(o, Job)]
    refused = [o for o in outcomes if isinstance(o, transitions.Refused)]
    assert len(queued) == 1 and len(refused) == 1
    assert "already has a job queued or running" in str(refused[0])
    assert finished(queued[0]).status == "succeeded"
    assert Job.objects.filter(environment=prod, started_at__isnull=False).count() == 1
    assert heads_of(url) == [inv.HEAD]


def test_the_database_refuses_a_second_active_job_whatever_the_path(pg_project, users):
    _, prod, _ = pg_project()
    Job.objects.create(environment=prod, kind="upgrade", target="heads", status="queued")

    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.create(environment=prod, kind="upgrade", target="heads", status="running")


def test_a_target_changed_by_hand_between_plan_and_run_is_refused(
    pg_project, worker, users, inventory
):
    worker()
    _, prod, url = pg_project()
    job = planning.job_request(
        environment=prod, kind="upgrade", target="heads", user=users["bob"], sql=True
    )
    alembic(inventory, url, "upgrade", "+1")
    moved = heads_of(url)

    job = finished(approvals.job_queue(job=job, user=users["bob"]))

    assert job.status == "failed"
    assert "The database moved since this plan" in job.error
    assert heads_of(url) == moved
    assert job.backup is None


def test_a_wrong_password_fails_the_job_and_stays_out_of_its_log(
    inventory, make_project, password_postgres, worker, users
):
    worker()
    good = pg_url("postgres", user=PASSWORD_ROLE, password=PASSWORD, port=password_postgres)
    alembic(inventory, good, "upgrade", inv.PROD_TARGET)
    project = make_project(inventory, {"prod": good})
    prod = project.environments.get()
    job = planning.job_request(
        environment=prod, kind="upgrade", target="heads", user=users["bob"], sql=True
    )
    wrong = "Wr0ng-Pa55word%!"
    prod.set_url(pg_url("postgres", user=PASSWORD_ROLE, password=wrong, port=password_postgres))
    prod.save()

    job = finished(approvals.job_queue(job=job, user=users["bob"]))

    assert job.status == "failed"
    assert "password authentication failed" in job.error
    everything = job.error + "\n".join(job.log_lines.values_list("text", flat=True))
    for secret in (wrong, PASSWORD):
        assert secret not in everything
    assert heads_of(good) == [inv.PROD_TARGET]


def test_a_killed_worker_leaves_an_interrupted_job_and_the_environment_takes_a_new_one(
    pg_project, worker, users, inventory
):
    worker(
        beat=True,
        env={
            "RETORT_HEARTBEAT_SECONDS": "1",
            "RETORT_HEARTBEAT_TIMEOUT": "4",
            "RETORT_REAPER_SECONDS": "2",
        },
    )
    _, prod, url = pg_project(at=inv.HEAD)
    write_revision(
        inventory.parent / "migrations" / "versions",
        "slowslow0001",
        inv.HEAD,
        body="op.execute('SELECT pg_sleep(120)')",
    )
    job = approvals.job_queue(
        job=planning.job_request(
            environment=prod, kind="upgrade", target="heads", user=users["bob"]
        ),
        user=users["bob"],
    )
    assert wait_for(lambda: job.log_lines.filter(text__contains="Running upgrade").exists())
    job.refresh_from_db()

    os.kill(job.worker_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    assert wait_for(lambda: Job.objects.get(pk=job.pk).status == "interrupted", seconds=30)
    assert time.monotonic() - killed_at < 4 + 2 + 5  # heartbeat timeout + reaper interval
    job.refresh_from_db()
    assert "stopped (no heartbeat" in job.error
    assert "job_interrupted" in actions_of(job)
    assert wait_for(lambda: not alembic_processes(inventory), seconds=10), "alembic outlived it"
    assert wait_for(lambda: not sleeping(url), seconds=10), "its database session outlived it"
    assert heads_of(url) == [inv.HEAD]  # the migration's transaction died with it
    again = run(prod, users, "downgrade", "-1")
    assert again.status == "succeeded", again.error


def test_the_sql_preview_is_the_sql_for_this_database(pg_project, worker, users):
    worker()
    _, prod, _ = pg_project()

    job = planning.job_request(
        environment=prod, kind="upgrade", target="heads", user=users["bob"], sql=True
    )

    assert wait_for(lambda: Job.objects.get(pk=job.pk).sql_status != "pending")
    job.refresh_from_db()
    assert job.sql_status == "ready", job.sql_note
    assert "ALTER TABLE products DROP COLUMN legacy_flag" in job.sql_preview
    assert f"UPDATE alembic_version SET version_num='{inv.HEAD}'" in job.sql_preview
    assert job.sql_sha256 and job.plan_sha256
    assert any("legacy_flag" in f["detail"] for f in job.findings)


def test_a_project_that_cannot_run_offline_gets_no_preview_but_can_run(
    pg_project, worker, users, inventory
):
    worker()
    env_py = inventory.parent / "migrations" / "env.py"
    future = "from __future__ import annotations\n"
    env_py.write_text(
        env_py.read_text().replace(
            future,
            future + "from alembic import context as _context\n"
            "if _context.is_offline_mode():\n"
            "    raise SystemExit('this project needs a live database')\n",
            1,
        )
    )
    _, prod, url = pg_project()

    job = planning.job_request(
        environment=prod, kind="upgrade", target="+1", user=users["bob"], sql=True
    )

    assert wait_for(lambda: Job.objects.get(pk=job.pk).sql_status != "pending")
    job.refresh_from_db()
    assert job.sql_status == "unavailable"
    assert "this project needs a live database" in job.sql_note
    assert finished(approvals.job_queue(job=job, user=users["bob"])).status == "succeeded"


def test_a_queued_job_can_be_cancelled_and_then_never_runs(pg_project, worker, users, settings):
    _, prod, url = pg_project()
    settings.CELERY_TASK_DEFAULT_QUEUE = "nobody-listens-here"
    job = approvals.job_queue(
        job=planning.job_request(
            environment=prod, kind="upgrade", target="heads", user=users["bob"]
        ),
        user=users["bob"],
    )

    cancelled = planning.job_cancel(job=job, user=users["alice"])
    execution.job_run(job_id=job.pk)  # a late delivery finds it cancelled

    assert cancelled.status == "cancelled"
    assert Job.objects.get(pk=job.pk).started_at is None
    assert heads_of(url) == [inv.PROD_TARGET]
    with pytest.raises(transitions.Refused, match="only a waiting job"):
        planning.job_cancel(job=job, user=users["alice"])


def test_request_job_from_a_shell_waits_and_prints_the_job(pg_project, worker, users):
    worker()
    _, prod, url = pg_project()
    out = io.StringIO()

    upgrade = ["request_job", prod.project.slug, "prod", "--kind", "upgrade", "--target", "heads"]

    call_command(*upgrade, "--as", "bob", "--reason", "release 4.2", "--wait", stdout=out)

    printed = json.loads(out.getvalue())
    assert printed["status"] == "succeeded" and printed["error"] is None
    assert printed["from_heads"] == [inv.PROD_TARGET] and printed["result_heads"] == [inv.HEAD]
    assert Path(printed["backup_path"]).exists()
    with pytest.raises(CommandError, match="would change nothing"):
        call_command(*upgrade, "--as", "bob", stdout=io.StringIO())


# --- SQLite --------------------------------------------------------------------------------


def test_upgrade_downgrade_and_restore_on_sqlite(demo_project, worker, users):
    worker()
    staging = demo_project.environments.get(slug="staging")
    url = staging.get_url()
    seed_rows(url)
    before = tables_and_rows(url)

    upgraded = run(staging, users, "upgrade", "heads")
    assert upgraded.status == "succeeded", upgraded.error
    assert heads_of(url) == [inv.HEAD]
    assert upgraded.backup.kind == "sqlite" and Path(upgraded.backup.path).exists()

    downgraded = run(staging, users, "downgrade", "-1")
    assert downgraded.status == "succeeded", downgraded.error

    restored = run(staging, users, "restore", restore_from=upgraded.backup)
    assert restored.status == "succeeded", restored.error
    assert tables_and_rows(url) == before
    assert heads_of(url) == [inv.STAGING_TARGET]


def test_backups_beyond_the_environments_limit_are_removed(demo_project, worker, users):
    worker()
    dev = demo_project.environments.get(slug="dev")
    dev.keep_backups = 2
    dev.save()

    for kind, target in [("downgrade", "-1"), ("upgrade", "heads"), ("downgrade", "-1")]:
        assert run(dev, users, kind, target).status == "succeeded"

    kept = Backup.objects.filter(environment=dev, removed_at=None)
    removed = Backup.objects.filter(environment=dev).exclude(removed_at=None)
    # the worker prunes right after the job's status is stored: the test may look in between
    assert wait_for(lambda: removed.count() == 1, seconds=10)
    assert kept.count() == 2
    assert all(Path(b.path).exists() for b in kept)
    assert not Path(removed.get().path).exists()
