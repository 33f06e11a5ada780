"""Rollouts for CI: the JSON API (a token asks for one, reads it, acts on it) on real SQLite
tenants, and `manage.py rollout start --wait` with a real worker, exiting 0 only when every
target holds the target."""

from __future__ import annotations

import io
import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from environments import rollout_plans
from environments.models import ApiToken, Environment, Rollout
from examples.inventory import revisions as inv
from tests.conftest import drive

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def six(saas):
    return saas(6)


def api(client, user, url: str, body: dict | None = None):
    _, token = ApiToken.issue(user=user, name=f"ci-{uuid.uuid4().hex[:4]}")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if body is None:
        return client.get(url, **auth)
    return client.post(url, body, content_type="application/json", **auth)


def test_the_api_asks_for_a_rollout_that_starts_once_planned_and_reads_it_to_the_end(
    client, six, users, unconsumed_queue
):
    created = api(
        client,
        users["alice"],
        reverse("api_rollout_create", args=["saas"]),
        {
            "target": "heads",
            "labels": {"region": "eu"},
            "waves": ["canary: count=1 parallel=1", "rest: parallel=2"],
            "on_failure": "1",
            "backup": False,
            "start": True,
        },
    )
    assert created.status_code == 201, created.content
    assert created.json()["status"] == "planning"
    rollout = rollout_plans.rollout_plan(rollout_id=created.json()["id"])  # the worker's task
    assert rollout.status == "running"  # started as soon as it was planned

    drive(rollout)
    found = api(client, users["bob"], reverse("api_rollout", args=[rollout.pk])).json()

    assert found["status"] == "completed"
    assert found["counts"] == {"done": 3, "running": 0, "failed": 0, "waiting": 0, "total": 3}
    assert [t["environment"] for t in found["targets"]] == ["t001", "t003", "t005"]
    assert found["on_failure"] == "allow 1 failure, stop at the next"
    assert [wave["name"] for wave in found["waves"]] == ["canary", "rest"]
    refused = api(
        client, users["alice"], reverse("api_rollout_action", args=[rollout.pk, "pause"]), {}
    )
    assert refused.status_code == 409
    assert "only a running rollout can be paused" in refused.json()["error"]


def test_the_api_refuses_bad_input_and_people_who_may_not(client, six, users):
    url = reverse("api_rollout_create", args=["saas"])

    bad = api(client, users["alice"], url, {"waves": ["eu: parallel=lots"]})
    viewer = api(client, users["vera"], url, {"target": "heads"})

    assert bad.status_code == 400 and "parallel must be a whole number" in bad.json()["error"]
    assert viewer.status_code == 403 and "may not plan rollouts" in viewer.json()["error"]
    assert not Rollout.objects.exists()


@pytest.mark.worker
def test_the_cli_waits_for_the_rollout_and_exits_by_whether_every_target_made_it(
    six, users, start_worker, settings
):
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "rollout",
        "start",
        "saas",
        "--as",
        "alice",
        "--wave",
        "canary: count=1 parallel=1",
        "--wave",
        "rest: parallel=4",
        "--no-backup",
        "--wait",
        "--timeout",
        "180",
        stdout=out,
        stderr=err,
    )

    found = json.loads(out.getvalue())
    assert found["status"] == "completed"
    assert found["counts"]["done"] == found["counts"]["total"] == 6
    assert "running" in err.getvalue()

    broken = Environment.objects.get(name="t002")
    path = Path(broken.get_url().removeprefix("sqlite:///"))
    with sqlite3.connect(path) as db:  # said to be 3 behind, but it holds what they make
        db.execute(f"UPDATE alembic_version SET version_num = '{inv.STAGING_TARGET}'")
    with pytest.raises(SystemExit) as exited:
        call_command(
            "rollout", "start", "saas", "--as", "alice", "--target", "heads", "--wait",
            "--timeout", "180", stdout=(out := io.StringIO()), stderr=io.StringIO(),
        )  # fmt: skip
    assert exited.value.code == 1
    assert json.loads(out.getvalue())["status"] == "stopped"

    with pytest.raises(CommandError, match="A wave is written"):
        call_command("rollout", "start", "saas", "--as", "alice", "--wave", "oops")
