"""The rollout pages, through Django's test client on real SQLite tenants: the form asks for a
rollout, the page shows its plans and SQL, the approval, the waves with their targets, the first
failure with its job and error line; a poll answers 204 while nothing changes; bad input is
said in a sentence. (That the pages read no target: tests/test_pages_read_nothing.py.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from django.urls import reverse

from environments import rollout_plans, rollouts
from environments.models import Environment, Rollout
from tests.conftest import drive

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def six(saas, unconsumed_queue):
    return saas(6)


def planned(client, project) -> Rollout:
    response = client.post(
        reverse("rollout_new"),
        {
            "project": project.slug,
            "target": "heads",
            "labels": "",
            "waves": "canary: count=1 parallel=1\neu: region=eu parallel=2\nrest: parallel=4",
            "on_failure": "stop",
            "backup": "no",
            "reason": "release 42 <script>alert(1)</script>",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    rollout = Rollout.objects.get()
    assert rollout.status == "planning"
    return rollout_plans.rollout_plan(rollout_id=rollout.pk)  # the worker's task


def test_the_form_asks_for_a_rollout_and_its_page_shows_the_plans(client_alice, six):
    rollout = planned(client_alice, six)

    page = client_alice.get(rollout.get_absolute_url()).content.decode()

    assert f"Rollout #{rollout.pk}: saas to <code>heads</code>" in page
    assert "Plan 1</strong>: 2 targets from" in page or "Plan 2</strong>: 2 targets" in page
    assert "CREATE TABLE audit_notes" in page
    assert "<script>alert(1)</script>" not in page  # the reason is escaped
    assert "&lt;script&gt;" in page
    assert 'id="submit-rollout"' in page and "Start the rollout" in page
    assert 'data-testid="wave-1"' in page and ">1. canary<" in page


def test_the_page_follows_the_run_and_names_the_first_failure_with_its_job(
    client_alice, six, users
):
    broken = Environment.objects.get(name="t001")  # the canary
    path = Path(broken.get_url().removeprefix("sqlite:///"))
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE audit_notes (id INTEGER PRIMARY KEY)")
    rollout = planned(client_alice, six)
    client_alice.post(reverse("rollout_action", args=[rollout.pk, "submit"]))
    rollout = drive(Rollout.objects.get(pk=rollout.pk))
    assert rollout.status == "stopped"

    page = client_alice.get(rollout.get_absolute_url()).content.decode()

    assert "Stopped in wave 1 (canary): 1 target failed, t001 first" in page
    job = rollout.targets.get(environment=broken).job
    assert f'href="/jobs/{job.pk}/" id="failing-job"' in page
    assert "table audit_notes already exists" in page
    assert 'data-testid="count-failed">1<' in page
    assert 'id="retry-rollout"' in page and 'id="resume-rollout"' in page

    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE audit_notes")
    client_alice.post(reverse("rollout_action", args=[rollout.pk, "retry"]))
    client_alice.post(reverse("rollout_action", args=[rollout.pk, "resume"]))
    rollout = drive(Rollout.objects.get(pk=rollout.pk))
    page = client_alice.get(rollout.get_absolute_url()).content.decode()

    assert rollout.status == "completed"
    assert 'data-testid="count-done">6<' in page
    assert "finished in" in page


def test_a_poll_answers_204_while_nothing_changes_and_the_region_when_it_does(
    client_alice, six, users
):
    rollout = planned(client_alice, six)
    url = reverse("rollout_live", args=[rollout.pk])
    first = client_alice.get(url, headers={"HX-Request": "true"})
    key = first.content.decode().split('data-live-key="', 1)[1].split('"', 1)[0]

    assert client_alice.get(url, {"since": key}, headers={"HX-Request": "true"}).status_code == 204
    rollouts.rollout_submit(rollout=rollout, user=users["alice"])
    again = client_alice.get(url, {"since": key}, headers={"HX-Request": "true"})

    assert again.status_code == 200
    assert 'id="rollout-status" data-testid="rollout-status">running<' in again.content.decode()


def test_bad_input_on_the_form_is_said_and_nothing_is_saved(client_alice, six):
    response = client_alice.post(
        reverse("rollout_new"),
        {"project": six.slug, "target": "heads", "waves": "eu region", "on_failure": "stop"},
    )

    assert response.status_code == 400
    assert "A wave is written" in response.content.decode()
    assert not Rollout.objects.exists()
    assert 'value="heads"' in response.content.decode()  # what was typed is kept


def test_approval_on_the_page_binds_to_the_plans_read(client, six, people):
    Environment.objects.filter(name="t002").update(required_approvals=1)
    client.force_login(people["bob"])
    rollout = planned(client, six)
    client.post(reverse("rollout_action", args=[rollout.pk, "submit"]))
    rollout.refresh_from_db()
    assert rollout.status == "awaiting_approval"
    page = client.get(rollout.get_absolute_url()).content.decode()
    assert "someone else must decide" in page and 'id="approve-rollout"' not in page

    client.force_login(people["alice"])
    stale = client.post(
        reverse("rollout_action", args=[rollout.pk, "approve"]), {"plan_sha256": "f" * 64}
    )
    assert stale.status_code == 409 and "Read them again" in stale.content.decode()
    client.post(
        reverse("rollout_action", args=[rollout.pk, "approve"]),
        {"plan_sha256": rollout.plan_sha256, "comment": "read plan 1 and 2"},
    )

    rollout.refresh_from_db()
    assert rollout.status == "running"
    assert "read plan 1 and 2" in client.get(rollout.get_absolute_url()).content.decode()
