"""A worker killed with SIGKILL in the middle of a backup takes its pg_dump with it, and the
reaper leaves no half-written backup behind (issue #17): every tool Retort starts goes through
`core/processes.py`, which ties the child's life to its worker's."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from environments import approvals, execution, planning
from environments.models import Job
from examples.inventory import revisions as inv
from tests.conftest import alembic, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def pg_dumps_of(database: str) -> list[int]:
    """The pids of pg_dump processes working on `database` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if any(Path(a.decode(errors="replace")).name == "pg_dump" for a in argv[:5]) and any(
                database.encode() in a for a in argv
            ):
                found.append(int(entry.name))
    return found


def backend_waits(database: str) -> bool:
    """pg_dump's session on the server is waiting for the lock the test holds."""
    with (
        contextlib.closing(
            psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
        ) as admin,
        admin.cursor() as cursor,
    ):
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = 'retort-backup' AND wait_event_type = 'Lock'",
            [database],
        )
        return cursor.fetchone()[0] > 0


def test_a_worker_killed_during_pg_dump_takes_it_along_and_the_reaper_leaves_no_partial_file(
    inventory, make_project, pg_database, users, start_worker, settings
):
    url = pg_database()
    database = url.rsplit("/", 1)[1]
    alembic(inventory, url, "upgrade", inv.PROD_TARGET)
    project = make_project(inventory, {"prod": url})
    prod = project.environments.get(slug="prod")
    # pg_dump waits behind this lock for as long as the test holds it
    blocker = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=database)
    blocker.cursor().execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    try:
        settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
        job = planning.job_request(
            environment=prod, kind="upgrade", target="heads", user=users["alice"]
        )
        assert job.backs_up
        approvals.job_queue(job=job, user=users["alice"])
        assert wait_for(lambda: backend_waits(database) and pg_dumps_of(database), seconds=60)
        job.refresh_from_db()
        assert job.status == "running" and job.worker_pid
        folder = Path(django_settings.RETORT_BACKUP_ROOT) / project.slug / prod.slug
        assert list(folder.glob(".*.partial"))  # the dump is being written

        os.kill(job.worker_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        gone = wait_for(lambda: not pg_dumps_of(database), seconds=2)
        took = time.monotonic() - killed_at
    finally:
        blocker.rollback()
        blocker.close()

    assert gone, f"pg_dump outlived its worker by more than 2 s ({pg_dumps_of(database)})"
    assert took < 2
    later = timezone.now() + timedelta(seconds=django_settings.RETORT_HEARTBEAT_TIMEOUT + 5)
    assert execution.jobs_reap(now=later) == [job.pk]
    job.refresh_from_db()
    assert job.status == Job.Status.INTERRUPTED
    assert list(folder.glob(".*.partial")) == []
    assert list(folder.glob("*")) == []  # and no backup was published from the half-written one
