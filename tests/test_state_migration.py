"""The reads stored before each environment had one state row become its state and history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = ("environments", "0012_drift_check_on_request")
AFTER = ("environments", "0013_current_state_and_changes")


@pytest.fixture(autouse=True)
def _back_to_the_latest_migration():
    """Whatever happens in the test, the next one finds every migration applied."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    return executor.loader.project_state([target]).apps


@pytest.mark.django_db(transaction=True)
def test_stored_reads_become_each_environments_state_and_its_history():
    apps = _migrate(BEFORE)
    project = apps.get_model("environments", "Project").objects.create(
        name="inv", slug="inv", script_location="m"
    )
    environment = apps.get_model("environments", "Environment").objects.create(
        project=project, name="prod", slug="prod"
    )
    start = datetime(2026, 11, 1, tzinfo=UTC)
    reads = [
        ("behind", ["a1"]),
        ("behind", ["a1"]),
        ("behind", ["a1"]),
        ("unreachable", []),
        ("behind", ["a1"]),
        ("current", ["b2"]),
        ("current", ["b2"]),
    ]
    Snapshot = apps.get_model("environments", "Snapshot")
    for minutes, (status, heads) in enumerate(reads):
        Snapshot.objects.create(
            environment=environment,
            checked_at=start + timedelta(minutes=minutes),
            status=status,
            heads=heads,
            pending=["b2"] if status == "behind" else [],
        )

    apps = _migrate(AFTER)
    state = apps.get_model("environments", "CurrentState").objects.get()
    changes = list(
        apps.get_model("environments", "StateChange")
        .objects.order_by("at")
        .values_list("from_status", "status", "from_heads", "heads")
    )

    assert (state.status, state.heads, state.known_heads) == ("current", ["b2"], ["b2"])
    assert state.checked_at == start + timedelta(minutes=6)
    assert state.changed_at == start + timedelta(minutes=5)
    assert changes == [
        ("", "behind", [], ["a1"]),
        ("behind", "unreachable", ["a1"], []),
        ("unreachable", "behind", ["a1"], ["a1"]),
        ("behind", "current", ["a1"], ["b2"]),
    ]
