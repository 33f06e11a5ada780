"""Dashboard reads keep one idle session per PostgreSQL database for the next read, and what a
person would check about that: the server shows one quiet session, not one per refresh; what it
reports is read now, never remembered; migrations are not held up by it; it goes away when
idle, when switched off, and a session the server kills is replaced without an error."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from environments import reads
from environments.core import versions
from environments.models import Environment
from examples.inventory import revisions as inv
from tests.conftest import alembic, pg_admin, wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_sessions_from_earlier_tests():
    versions.close_kept_connections()
    yield
    versions.close_kept_connections()


def _sessions(url: str) -> list[tuple[int, str, str | None]]:
    """Retort's sessions on the database: (pid, state, what it waits for)."""
    name = make_url(url).database
    with contextlib.closing(pg_admin()) as admin, admin.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state, wait_event_type FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = 'retort' AND pid <> pg_backend_pid()",
            (name,),
        )
        return sorted(cursor.fetchall())


def _read(project):
    environment = Environment.objects.select_related("project").get(project=project, slug="prod")
    return reads.environment_read(environment=environment)


@pytest.fixture
def prod(inventory, make_project, pg_database):
    url = pg_database()
    alembic(inventory, url, "upgrade", inv.PROD_TARGET)
    return make_project(inventory, {"prod": url}), url


def test_refreshing_an_environment_again_and_again_keeps_one_idle_session_on_the_server(prod):
    project, url = prod

    first = _read(project)
    after_first = _sessions(url)
    for _ in range(4):
        again = _read(project)

    assert first.status == again.status == "behind"
    assert len(after_first) == 1
    pid, state, _ = after_first[0]
    assert state == "idle"  # no transaction left open, so no lock held
    assert _sessions(url) == after_first  # the same session, not one per refresh


def test_a_migration_runs_beside_the_kept_session_and_the_next_read_sees_it(prod, inventory):
    project, url = prod
    assert _read(project).status == "behind"
    assert len(_sessions(url)) == 1

    # ALTER TABLE needs exclusive locks: it would wait if the kept session held any.
    alembic(inventory, url, "upgrade", "head")
    snapshot = _read(project)

    assert snapshot.status == "current"
    assert snapshot.heads == [inv.HEAD]
    assert len(_sessions(url)) == 1


def test_a_session_the_server_ends_is_replaced_without_an_error(prod):
    project, url = prod
    _read(project)
    [(pid, _, _)] = _sessions(url)
    with contextlib.closing(pg_admin()) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert wait_for(lambda: _sessions(url) == [], seconds=10)

    snapshot = _read(project)

    assert snapshot.status == "behind"
    assert snapshot.error == ""
    [(new_pid, _, _)] = _sessions(url)
    assert new_pid != pid


def test_a_kept_session_closes_once_idle_for_the_configured_seconds(prod, settings):
    settings.RETORT_READ_KEEPALIVE = 0.5
    project, url = prod

    assert _read(project).status == "behind"
    assert len(_sessions(url)) == 1

    assert wait_for(lambda: _sessions(url) == [], seconds=10)
    assert _read(project).status == "behind"  # and the next read opens one again
    assert len(_sessions(url)) == 1


def test_keepalive_zero_closes_every_connection_after_its_read(prod, settings):
    settings.RETORT_READ_KEEPALIVE = 0
    project, url = prod

    assert _read(project).status == "behind"

    assert _sessions(url) == []


def test_a_job_worker_keeps_no_session_to_the_database_it_changed(prod):
    project, url = prod
    environment = Environment.objects.get(project=project, slug="prod")

    snapshot = reads.environment_read(environment=environment, keep_alive=0)

    assert snapshot.status == "behind"
    assert _sessions(url) == []


def test_a_sqlite_file_is_never_kept_open(inventory, make_project, sqlite_url):
    url = sqlite_url("prod")
    alembic(inventory, url, "upgrade", "head")
    project = make_project(inventory, {"prod": url})
    path = Path(make_url(url).database).resolve()

    assert _read(project).status == "current"

    open_files = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            open_files.add(os.readlink(f"/proc/self/fd/{fd}"))
    assert str(path) not in open_files


def test_a_forked_process_opens_its_own_session_and_leaves_the_parents_alone(prod):
    """Celery's pool processes are forked: a child must not talk over its parent's socket."""
    project, url = prod
    _read(project)
    [(parent_pid, _, _)] = _sessions(url)

    child = os.fork()
    if child == 0:  # pragma: no cover - the child's outcome is its exit code
        code = 1
        try:
            read = versions.read_versions(url, timeout=5, keep_alive=60)
            code = 0 if read.heads == (inv.PROD_TARGET,) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert _read(project).status == "behind"  # the parent's session still works
    assert [pid for pid, _, _ in _sessions(url)] == [parent_pid]
