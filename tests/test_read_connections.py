"""Reads open a connection each and close it: a fleet of databases never holds an idle session
of Retort's (150 targets kept open once made a server with max_connections=100 refuse its own
application). Each read has its own deadline from the moment it starts, so silent databases
ahead of healthy ones hide none of them."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from environments import reads
from environments.core import status as core_status
from environments.core.script_config import config_from_ini
from environments.core.scripts import load_index
from examples.inventory import revisions as inv
from tests.conftest import alembic, env, pg_admin, pg_url

pytestmark = pytest.mark.django_db


def _sessions(url: str) -> int:
    """Retort's sessions on the database, as the server lists them."""
    with contextlib.closing(pg_admin()) as admin, admin.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (make_url(url).database,),
        )
        return cursor.fetchone()[0]


def test_reading_a_database_again_and_again_leaves_no_session_on_the_server(
    inventory, make_project, pg_database
):
    url = pg_database()
    alembic(inventory, url, "upgrade", inv.PROD_TARGET)
    prod = env(make_project(inventory, {"prod": url}), "prod")

    states = [reads.environment_read(environment=prod) for _ in range(5)]

    assert {state.status for state in states} == {"behind"}
    assert _sessions(url) == 0


def test_a_migration_run_between_two_reads_is_seen_by_the_next(
    inventory, make_project, pg_database
):
    url = pg_database()
    alembic(inventory, url, "upgrade", inv.PROD_TARGET)
    prod = env(make_project(inventory, {"prod": url}), "prod")
    before = reads.environment_read(environment=prod)

    alembic(Path(inventory), url, "upgrade", "head")
    after = reads.environment_read(environment=prod)

    assert (before.status, after.status) == ("behind", "current")


def test_silent_databases_ahead_of_healthy_ones_hide_none_of_them(
    inventory, sqlite_url, silent_server
):
    """Four read slots, eight silent servers first: each costs its own slot its own timeout,
    and the twelve healthy databases behind them are read, not reported unreachable."""
    index = load_index(config_from_ini(inventory))
    good = sqlite_url("good")
    alembic(inventory, good, "upgrade", "head")
    silent = [
        core_status.Target(
            key=f"silent{i}", url=lambda: pg_url("x", port=silent_server), index=index
        )
        for i in range(8)
    ]
    healthy = [core_status.Target(key=f"good{i}", url=lambda: good, index=index) for i in range(12)]

    started = time.monotonic()
    states = core_status.read_many([*silent, *healthy], timeout=2.0, workers=4)
    elapsed = time.monotonic() - started

    assert {states[f"silent{i}"].status for i in range(8)} == {core_status.Status.UNREACHABLE}
    assert {states[f"good{i}"].status for i in range(12)} == {core_status.Status.CURRENT}
    # two rounds of silent reads in four slots, then the healthy ones: not one per database
    assert elapsed < 2 * (2.0 + 0.5) + 2.0, f"took {elapsed:.2f}s"


def test_reads_stuck_past_their_deadline_never_keep_the_others_waiting_for_ever(
    inventory, sqlite_url
):
    """Two reads hang outside any driver timeout and keep their two slots: the call still
    ends once every read could have had its turn, naming what did not answer."""
    index = load_index(config_from_ini(inventory))
    good = sqlite_url("good")
    alembic(inventory, good, "upgrade", "head")
    release = threading.Event()

    def hang() -> str:
        release.wait(30)
        return good

    stuck = [core_status.Target(key=f"stuck{i}", url=hang, index=index) for i in range(2)]
    healthy = [core_status.Target(key=f"good{i}", url=lambda: good, index=index) for i in range(3)]
    started = time.monotonic()
    try:
        states = core_status.read_many([*stuck, *healthy], timeout=1.0, workers=2)
    finally:
        elapsed = time.monotonic() - started
        release.set()

    assert {states[f"stuck{i}"].status for i in range(2)} == {core_status.Status.UNREACHABLE}
    assert set(states) == {"stuck0", "stuck1", "good0", "good1", "good2"}
    assert elapsed < 3 * (1.0 + 0.5) + 0.5 + 1.0, f"took {elapsed:.2f}s"
