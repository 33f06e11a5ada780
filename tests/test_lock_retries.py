"""A run that gives up waiting for a lock is tried again when that is safe, says who blocked
it, and leaves the database as it was when it gives up for good (real PostgreSQL databases,
real alembic; another session holds ACCESS SHARE on `orders` in a transaction it keeps open,
which the ALTER TABLE's ACCESS EXCLUSIVE must wait for)."""

from __future__ import annotations

import contextlib
import sqlite3
import textwrap
import threading
from pathlib import Path

import psycopg2
import pytest
from django.db import connection
from django.utils import timezone

from environments import execution
from environments.core import lock_waits, migration_lock
from environments.models import Environment, Job
from environments.reads import environment_read
from tests.conftest import REPO, alembic, at_r1, requested, wait_for
from tests.conftest import orders_prod as prod

pytestmark = pytest.mark.django_db(transaction=True)


def log_of(job: Job) -> str:
    return "\n".join(job.log_lines.order_by("seq").values_list("text", flat=True))


@contextlib.contextmanager
def reading_orders(url: str, app: str = "billing"):
    """Another session that has read `orders` and keeps its transaction open."""
    blocker = psycopg2.connect(url, application_name=app)
    try:
        with blocker.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM orders  -- the nightly report")
        yield blocker
    finally:
        with contextlib.suppress(psycopg2.Error):
            blocker.rollback()
        blocker.close()


def in_thread(job: Job) -> threading.Thread:
    def run() -> None:
        try:
            execution.job_run(job_id=job.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def policy(environment: Environment, *, attempts: int, backoff: float) -> None:
    environment.lock_timeout_seconds = 1
    environment.lock_attempts = attempts
    environment.lock_retry_seconds = backoff
    environment.save()


def schema_of(url: str) -> tuple[list, list]:
    with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cursor:
        cursor.execute("SELECT version_num FROM alembic_version")
        versions = cursor.fetchall()
        cursor.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders' "
            "ORDER BY ordinal_position"
        )
        return versions, [row[0] for row in cursor.fetchall()]


def test_an_upgrade_behind_a_lock_is_tried_again_and_succeeds_once_the_blocker_commits(
    orders_project, users
):
    environment = prod(orders_project)
    policy(environment, attempts=4, backoff=1)  # waits 1 s, then 2 s, then 4 s
    at_r1(environment, users["alice"])
    url = environment.get_url()
    job = requested(environment, users["alice"], target="r2")
    assert job.run_limits["attempts"] == 4

    with reading_orders(url) as blocker:
        blocker_pid = blocker.get_backend_pid()
        runner = in_thread(job)
        # the test lets the blocker go once the second attempt has given up
        assert wait_for(lambda: "Attempt 2 of 4 gave up" in log_of(job), seconds=60), log_of(job)
        assert Job.objects.get(pk=job.pk).status == "running"
        blocker.commit()
        runner.join(timeout=60)

    job.refresh_from_db()
    log = log_of(job)
    assert job.status == "succeeded", job.error
    assert (
        "Timeouts on alembic's connection: lock_timeout 1 s, statement_timeout off; a run that "
        "times out waiting for a lock is tried up to 4 times, 1 s after the first attempt, each "
        "wait twice the one before." in log
    )
    assert "Attempt 1 of 4 gave up waiting for a lock after lock_timeout 1 s" in log
    assert "Trying again in 1 s." in log and "Trying again in 2 s." in log
    assert "Attempt 2 of 4: $ " in log and "Attempt 3 of 4: $ " in log
    assert "Attempt 4 of 4" not in log
    # who blocked it, in the log as the run waited
    assert "alembic is waiting" in log and f"held by pid {blocker_pid}" in log
    assert "AccessExclusiveLock on orders" in log
    assert "nothing of r2 was committed (PostgreSQL rolled it back)" in log
    assert schema_of(url) == ([("r2",)], ["id", "note"])
    assert job.lock_wait is None  # nothing is waited for any more


def test_an_upgrade_whose_blocker_never_commits_fails_after_its_attempts_and_names_it(
    orders_project, users
):
    environment = prod(orders_project)
    policy(environment, attempts=3, backoff=0.2)
    at_r1(environment, users["alice"])
    url = environment.get_url()
    job = requested(environment, users["alice"], target="r2")

    with reading_orders(url, app="billing") as blocker:
        blocker_pid = blocker.get_backend_pid()
        execution.job_run(job_id=job.pk)

    job.refresh_from_db()
    log = log_of(job)
    assert job.status == "failed"
    assert job.error.startswith(
        "Gave up waiting for a lock after 3 attempts (lock_timeout 1 s) in revision r2 (1 of 1): "
        f"it waited for AccessExclusiveLock on orders, held by pid {blocker_pid} (user postgres, "
        "app=billing, from 127.0.0.1, idle in transaction for "
    ), job.error
    assert "app=billing" in job.error
    assert "idle in transaction for" in job.error
    assert "holding AccessShareLock" in job.error
    assert "last query: SELECT count(*) FROM orders -- the nightly report" in job.error
    assert "The database holds r1 now; nothing of r2 was committed" in job.error
    assert f"`SELECT pg_terminate_backend({blocker_pid})` ends it" in job.error
    assert "Traceback" not in job.error
    assert log.count("$ ") == 3  # three attempts, each in the log
    assert "Attempt 3 of 3: $ " in log and "Attempt 4" not in log
    # the database is as it was: checked directly
    assert schema_of(url) == ([("r1",)], ["id"])


def test_a_revision_that_works_outside_a_transaction_is_never_tried_again(orders_project, users):
    environment = prod(orders_project)
    policy(environment, attempts=3, backoff=0.2)
    at_r1(environment, users["alice"])
    versions = Path(orders_project.alembic_ini).parent / "migrations" / "versions"
    r2 = next(versions.glob("r2_*"))
    r2.write_text(
        r2.read_text().replace(
            '    op.add_column("orders"',
            '    with op.get_context().autocommit_block():\n        op.add_column("orders"',
        )
    )
    url = environment.get_url()
    job = requested(environment, users["alice"], target="r2")

    with reading_orders(url):
        execution.job_run(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == "failed"
    assert (
        "Revision r2 works outside a transaction (autocommit_block or CONCURRENTLY), so part of "
        "it may have been committed: Retort does not try it again." in job.error
    ), job.error
    assert job.error.startswith("Gave up waiting for a lock on the first attempt")
    assert log_of(job).count("$ ") == 1
    assert schema_of(url) == ([("r1",)], ["id"])


def test_a_failure_that_is_not_a_lock_timeout_is_not_tried_again(orders_project, users):
    environment = prod(orders_project)
    policy(environment, attempts=3, backoff=0.2)
    at_r1(environment, users["alice"])
    with contextlib.closing(psycopg2.connect(environment.get_url())) as db, db.cursor() as cur:
        cur.execute("ALTER TABLE orders ADD COLUMN note text")  # made by hand
        db.commit()
    job = requested(environment, users["alice"], target="r2")

    execution.job_run(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == "failed"
    assert 'column "note" of relation "orders" already exists' in job.error
    assert log_of(job).count("$ ") == 1


def test_a_sqlite_run_is_neither_watched_nor_tried_again(orders_project, users):
    dev = Environment.objects.get(project=orders_project, slug="dev")
    sqlite3.connect(dev.get_url().removeprefix("sqlite:///")).close()  # an empty database
    job = requested(dev, users["alice"], target="r2")

    execution.job_run(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert "Timeouts on alembic's connection" not in log_of(job)


@pytest.mark.parametrize(
    ("state", "seconds", "expected"),
    [
        ("idle in transaction", 840, "idle in transaction for 14 min"),
        ("active", 3.25, "active for 3.2 s"),
    ],
)
def test_a_blocker_is_described_as_a_person_reads_it(state, seconds, expected):
    blocker = lock_waits.Blocker(
        pid=4711,
        user="app",
        application="billing",
        client="10.0.0.7",
        state=state,
        state_seconds=seconds,
        query="SELECT *\n  FROM orders\n WHERE status = 'open'",
        holds="AccessShareLock",
    )
    wait = lock_waits.LockWait(4712, "AccessExclusiveLock", "orders", 3.24, (blocker,))
    label = "running" if state == "active" else "last query"
    assert wait.sentence() == (
        "waiting 3.2 s for AccessExclusiveLock on orders, held by pid 4711 (user app, "
        f"app=billing, from 10.0.0.7, {expected}, holding AccessShareLock, {label}: "
        "SELECT * FROM orders WHERE status = 'open')"
    )
    assert lock_waits.LockWait.from_json(wait.as_json()) == wait


# --- the migration lock, shared with the application's own `alembic upgrade` ------------------


def test_an_application_upgrade_with_the_readme_recipe_waits_for_retorts_run(
    orders_project, users, client_alice
):
    environment = prod(orders_project)
    url = environment.get_url()
    root = Path(orders_project.alembic_ini).parent
    key = migration_lock.migration_lock_key("alembic_version", None)
    assert environment.lock_key == key
    recipe = migration_lock.lock_recipe(key)
    assert recipe in (REPO / "README.md").read_text(), "the README shows the recipe as it is"
    env_py = root / "migrations" / "env.py"
    opening = "        with engine.connect() as connection:\n"
    assert opening in env_py.read_text()
    env_py.write_text(
        env_py.read_text().replace(opening, opening + textwrap.indent(recipe, " " * 12))
    )
    r2 = next((root / "migrations" / "versions").glob("r2_*"))
    r2.write_text(
        r2.read_text().replace(
            "    op.add_column(", '    op.execute("SELECT pg_sleep(3)")\n    op.add_column('
        )
    )
    at_r1(environment, users["alice"])  # Retort's own run passes over the recipe
    job = requested(environment, users["alice"], target="r2")

    runner = in_thread(job)
    assert wait_for(lambda: "Running upgrade r1 -> r2" in log_of(job), seconds=60), log_of(job)
    # a read meanwhile (a worker's) finds the lock held, and the card says so
    state = environment_read(environment=environment)
    assert state.migration_lock["application"] == f"retort job #{job.pk} (migration lock)"
    card = client_alice.get(environment.get_absolute_url()).content.decode()
    assert f"A migration is running here: pid {state.migration_lock['pid']} from 127.0.0.1" in card
    assert f"migration lock key {key} (the env.py recipe takes it)" in card
    # the application's pod starts and runs its own upgrade to head
    app = alembic(Path(orders_project.alembic_ini), url, "upgrade", "head")
    app_ended = timezone.now()
    runner.join(timeout=60)

    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.finished_at <= app_ended  # it waited for Retort's run to end…
    assert "Running upgrade r1 -> r2" not in app.stderr  # …and did not race it
    assert "Running upgrade r2 -> r3" in app.stderr
    assert schema_of(url) == ([("r3",)], ["id", "note"])
    # once nobody holds it, the next read says nothing of it
    assert environment_read(environment=environment).migration_lock is None


def test_a_concurrent_index_cancelled_by_statement_timeout_is_reported_invalid(
    orders_project, users
):
    environment = prod(orders_project)
    environment.lock_timeout_seconds = 30
    environment.statement_timeout_seconds = 1
    environment.save()
    at_r1(environment, users["alice"])
    r2 = next((Path(orders_project.alembic_ini).parent / "migrations" / "versions").glob("r2_*"))
    r2.write_text(
        r2.read_text().replace(
            '    op.add_column("orders", sa.Column("note", sa.String(100)))',
            "    with op.get_context().autocommit_block():\n"
            '        op.create_index("ix_orders_by_id", "orders", ["id"], '
            "postgresql_concurrently=True)",
        )
    )
    url = environment.get_url()
    job = requested(environment, users["alice"], target="r2")
    # a writer in an open transaction: the concurrent build waits for it, and its
    # statement_timeout of 1 s cancels it half-way
    writer = psycopg2.connect(url)
    try:
        with writer.cursor() as cursor:
            cursor.execute("INSERT INTO orders DEFAULT VALUES")
        execution.job_run(job_id=job.pk)
    finally:
        writer.rollback()
        writer.close()

    job.refresh_from_db()
    assert job.status == "failed"
    assert "canceling statement due to statement timeout" in job.error, job.error
    assert (
        "PostgreSQL marks index ix_orders_by_id on orders INVALID: its CREATE INDEX "
        "CONCURRENTLY did not finish, so it is kept up to date on every write and never used. "
        'Drop it (DROP INDEX CONCURRENTLY "public"."ix_orders_by_id") before trying again.'
    ) in job.error
    assert log_of(job).count("$ ") == 1  # never tried again
    with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = 'ix_orders_by_id'"
        )
        assert cursor.fetchall() == [(False,)]
        cursor.execute("SELECT version_num FROM alembic_version")
        assert cursor.fetchall() == [("r1",)]
