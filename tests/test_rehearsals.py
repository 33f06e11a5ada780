"""Rehearsals: a plan run on a restored copy of its target (50 MB and more) before anyone
approves it — the target untouched, the scratch database gone afterwards (also after its
worker is killed), the time of each revision, the locks it held and the tables rewritten
recorded, a failure on the copy's data named, and a policy that wants a recent rehearsal
(real PostgreSQL and SQLite databases, real pg_dump/pg_restore, real alembic, a real worker
where it is killed)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from environments import approvals, execution, rehearsals
from environments.models import Environment, Job
from environments.transitions import Refused
from tests.conftest import at_r1, pg_admin, planned, wait_for
from tests.conftest import orders_prod as prod

pytestmark = pytest.mark.django_db(transaction=True)


def r2_body(project, body: str) -> None:
    r2 = next((Path(project.alembic_ini).parent / "migrations" / "versions").glob("r2_*"))
    r2.write_text(
        r2.read_text().replace(
            '    op.add_column("orders", sa.Column("note", sa.String(100)))', body
        )
    )


def checksums(url: str) -> dict[str, str]:
    """Every table's rows, digested: what "untouched" means."""
    with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "ORDER BY 1"
        )
        found = {}
        for (table,) in cursor.fetchall():
            rows = "coalesce(string_agg(t::text, '|' ORDER BY t::text), '')"
            cursor.execute(f'SELECT md5({rows}) FROM "{table}" t')
            found[table] = cursor.fetchone()[0]
        cursor.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'orders' ORDER BY ordinal_position"
        )
        found["orders columns"] = repr(cursor.fetchall())
        return found


def scratch_exists(job: Job) -> bool:
    with contextlib.closing(pg_admin()) as admin, admin.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (rehearsals.scratch_name(job),)
        )
        return cursor.fetchone() is not None


def rehearse(job: Job, user) -> Job:
    rehearsal = rehearsals.rehearsal_request(job=job, user=user)
    assert rehearsal.status == "queued"
    execution.job_run(job_id=rehearsal.pk)
    return Job.objects.get(pk=rehearsal.pk)


def with_orders(url: str, rows: int, note: str | None = None) -> None:
    with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cursor:
        cursor.execute("INSERT INTO orders (id) SELECT generate_series(1, %s)", (rows,))
        if note is not None:
            cursor.execute("ALTER TABLE orders ADD COLUMN note varchar(100)")
            cursor.execute("UPDATE orders SET note = %s", (note,))
        db.commit()


def test_a_rehearsal_runs_the_plan_on_a_copy_and_leaves_the_target_as_it_was(
    orders_project, users, client_alice
):
    r2_body(
        orders_project,
        '    op.add_column("orders", sa.Column("note", sa.String(100)))\n'
        '    op.alter_column("orders", "id", type_=sa.BigInteger())  # rewrites orders\n'
        '    op.execute("SELECT pg_sleep(0.5)")  # holding its lock',
    )
    environment = prod(orders_project)
    at_r1(environment, users["alice"])
    url = environment.get_url()
    with_orders(url, 1_500_000)  # 50 MB and more
    before = checksums(url)
    job = planned(environment, users["alice"], target="r2")

    rehearsal = rehearse(job, users["alice"])

    assert rehearsal.status == "succeeded", rehearsal.error
    assert checksums(url) == before  # the target: every table, the version table included
    assert not scratch_exists(rehearsal)
    data = rehearsal.rehearsal
    assert data["plan_sha256"] == job.plan_sha256
    assert [step["revision"] for step in data["revisions"]] == ["r2"]
    assert data["revisions"][0]["seconds"] > 0
    assert data["rewrites"] == ["orders"]
    exclusive = [
        lock
        for lock in data["locks"]
        if (lock["revision"], lock["relation"], lock["mode"])
        == ("r2", "orders", "AccessExclusiveLock")
    ]
    assert exclusive and exclusive[0]["seconds"] >= 0.4, data["locks"]
    assert data["schema"] == []  # the copy's schema is the one the migrations build
    assert data["backup"] == rehearsal.backup_id  # no backup at r1 yet: a fresh one
    # the plan's page says it was rehearsed, and how it went
    page = client_alice.get(job.get_absolute_url()).content.decode()
    assert "Rehearsed on a copy of prod from " in page
    assert "revision r2 rewrote orders (" in page and "s, AccessExclusiveLock)" in page
    assert "its schema is the one the migrations build." in page
    assert f"Rehearsal #{rehearsal.pk}" in page
    # a second rehearsal uses the backup the first one made
    again = rehearse(Job.objects.get(pk=job.pk), users["alice"])
    assert again.status == "succeeded" and again.rehearsal["backup"] == data["backup"]


def test_a_plan_that_fails_on_the_copys_data_fails_in_the_rehearsal_with_its_error_line(
    orders_project, users, client_alice
):
    r2_body(
        orders_project, '    op.create_index("ux_orders_note", "orders", ["note"], unique=True)'
    )
    environment = prod(orders_project)
    at_r1(environment, users["alice"])
    url = environment.get_url()
    with_orders(url, 10, note="the same")  # duplicates: no unique index can be built
    before = checksums(url)
    environment.required_approvals = 1
    environment.save()
    job = approvals.job_submit(
        job=planned(environment, users["alice"], target="r2"), user=users["alice"]
    )
    assert job.status == "awaiting_approval"

    rehearsal = rehearse(job, users["alice"])

    assert rehearsal.status == "failed"
    assert rehearsal.rehearsal["failed_revision"] == "r2"
    assert 'could not create unique index "ux_orders_note"' in rehearsal.rehearsal["error_line"]
    assert rehearsal.error.startswith("The plan failed on the copy in revision r2: could not")
    assert checksums(url) == before and not scratch_exists(rehearsal)
    for page in (job.get_absolute_url(), "/approvals/"):  # the plan's page and the approval
        shown = client_alice.get(page).content.decode()
        assert "The rehearsal on a copy of prod from" in shown, page
        assert (
            "failed: The plan failed on the copy in revision r2: could not create unique index"
            in shown
        ), page


def test_a_sqlite_target_is_rehearsed_on_a_copy_of_its_file(orders_project, users):
    dev = Environment.objects.get(project=orders_project, slug="dev")
    path = Path(dev.get_url().removeprefix("sqlite:///"))
    sqlite3.connect(path).close()
    at_r1(dev, users["alice"])
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    job = planned(dev, users["alice"], target="r2")

    rehearsal = rehearse(job, users["alice"])

    assert rehearsal.status == "succeeded", rehearsal.error
    assert [step["revision"] for step in rehearsal.rehearsal["revisions"]] == ["r2"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_only_a_plan_that_has_not_run_can_be_rehearsed(orders_project, users):
    environment = prod(orders_project)
    at_r1(environment, users["alice"])
    done = Job.objects.filter(environment=environment, status="succeeded").first()

    with pytest.raises(Refused, match="only a plan that has not run can be rehearsed"):
        rehearsals.rehearsal_request(job=done, user=users["alice"])


def test_the_reaper_drops_the_scratch_database_a_killed_rehearsal_left(orders_project, users):
    environment = prod(orders_project)
    at_r1(environment, users["alice"])
    job = planned(environment, users["alice"], target="r2")
    rehearsal = rehearsals.rehearsal_request(job=job, user=users["alice"])
    # its worker took it, made the scratch database, and died: no heartbeat since an hour
    stale = timezone.now() - timedelta(hours=1)
    Job.objects.filter(pk=rehearsal.pk).update(
        status="running", started_at=stale, heartbeat_at=stale, worker_host="gone", worker_pid=1
    )
    with contextlib.closing(pg_admin()) as admin, admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{rehearsals.scratch_name(rehearsal)}"')
    assert scratch_exists(rehearsal)

    assert execution.jobs_reap() == [rehearsal.pk]

    assert Job.objects.get(pk=rehearsal.pk).status == "interrupted"
    assert not scratch_exists(rehearsal)


def test_a_policy_counts_an_approval_only_after_a_recent_successful_rehearsal(
    orders_project, people
):
    environment = prod(orders_project)
    at_r1(environment, people["alice"])
    environment.required_approvals = 1
    environment.rehearsal_required_hours = 24
    environment.save()
    job = approvals.job_submit(
        job=planned(environment, people["alice"], target="r2"), user=people["alice"]
    )

    def approve():
        job.refresh_from_db()
        return approvals.job_decide(
            job=job, user=people["carol"], decision="approve", plan_sha256=job.plan_sha256
        )

    none = (
        "prod's policy counts an approval only after a successful rehearsal of this exact plan "
        r"within the last 24 h, and it has none\."
    )
    with pytest.raises(Refused, match=none):
        approve()
    old = rehearse(job, people["alice"])
    Job.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(hours=25))
    with pytest.raises(Refused, match=f"its newest, #{old.pk}, ended ") as refused:
        approve()
    assert refused.value.code == "rehearsal_required"
    assert Job.objects.get(pk=job.pk).approvals.count() == 0

    rehearse(Job.objects.get(pk=job.pk), people["alice"])
    approved = approve()

    assert approved.status == "queued"


def log_of(job: Job) -> str:
    return "\n".join(job.log_lines.order_by("seq").values_list("text", flat=True))


@pytest.mark.worker
def test_a_rehearsal_of_a_50_mb_copy_killed_with_its_worker_is_cleaned_up_by_the_reaper(
    orders_project, users, start_worker, settings
):
    r2_body(
        orders_project,
        '    op.add_column("orders", sa.Column("note", sa.String(100)))\n'
        '    op.execute("SELECT pg_sleep(120)")  # the worker is killed meanwhile',
    )
    environment = prod(orders_project)
    at_r1(environment, users["alice"])
    url = environment.get_url()
    with_orders(url, 1_500_000)
    with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size('orders')")
        assert cursor.fetchone()[0] >= 50 * 1024 * 1024
    before = checksums(url)
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
    job = planned(environment, users["alice"], target="r2")

    rehearsal = rehearsals.rehearsal_request(job=job, user=users["alice"])
    assert wait_for(lambda: "Running upgrade r1 -> r2" in log_of(rehearsal), seconds=180)
    assert scratch_exists(rehearsal)
    rehearsal.refresh_from_db()
    os.kill(rehearsal.worker_pid, signal.SIGKILL)
    later = timezone.now() + timedelta(seconds=django_settings.RETORT_HEARTBEAT_TIMEOUT + 5)

    assert execution.jobs_reap(now=later) == [rehearsal.pk]

    assert Job.objects.get(pk=rehearsal.pk).status == "interrupted"
    assert not scratch_exists(rehearsal)
    assert checksums(url) == before


def test_a_rehearsal_that_cannot_be_queued_leaves_nothing_behind(orders_project, users):
    environment = prod(orders_project)
    at_r1(environment, users["alice"])
    job = planned(environment, users["alice"], target="r2")
    other = planned(environment, users["alice"], target="r3")
    approvals.job_submit(job=other, user=users["alice"])  # queued: it holds prod

    with pytest.raises(Refused, match="prod already has a job queued or running"):
        rehearsals.rehearsal_request(job=job, user=users["alice"])
    with pytest.raises(Refused, match="vera may not rehearse jobs of prod"):
        rehearsals.rehearsal_request(job=job, user=users["vera"])

    assert not Job.objects.filter(kind="rehearse").exists()
