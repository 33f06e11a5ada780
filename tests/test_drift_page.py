"""The drift page shows the stored check (issue #16, item 15) and never claims a check that is
not under way: a broker that cannot take it, a worker that never reports back, a scheduled
check that started before the request, a viewer who may not ask."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from dashboard.celery import app as celery_app
from environments import drift
from environments.models import DriftState

pytestmark = pytest.mark.django_db


def page_of(client) -> str:
    return client.get(reverse("project_drift", args=["inventory"])).content.decode()


def test_a_check_the_broker_cannot_take_says_so_and_leaves_nothing_waiting(
    client, demo_project, users, closed_port, monkeypatch
):
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{closed_port}/0")
    assert str(closed_port) in celery_app.conf.broker_write_url
    client.force_login(users["bob"])

    response = client.post(reverse("project_drift_check", args=["inventory"]))

    html = response.content.decode()
    assert response.status_code == 503
    assert "The broker is unreachable, so no worker got the check" in html
    assert 'id="drift-checking"' not in html and 'id="drift-check-now"' in html
    state = DriftState.objects.get(project=demo_project)
    assert state.requested_at is None and not state.checking


def test_a_check_that_never_reports_back_gives_up_and_offers_to_ask_again(
    client, demo_project, users
):
    DriftState.objects.create(
        project=demo_project,
        checked_at=None,
        requested_at=timezone.now() - timedelta(minutes=20),
        requested_by=users["bob"],
    )
    client.force_login(users["bob"])

    html = page_of(client)

    assert 'id="drift-checking"' not in html
    assert re.search(r"The check bob asked for 20\W+minutes ago never reported back", html)
    assert 'id="drift-check-now"' in html and "hx-trigger" not in html.split("drift-body")[1][:200]


def test_a_scheduled_check_that_started_before_the_request_does_not_answer_it(
    demo_project, users, monkeypatch
):
    build = drift.drift_build

    def asked_for_meanwhile(**options):
        report = build(**options)
        DriftState.objects.update_or_create(
            project=demo_project,
            defaults={"requested_at": timezone.now(), "requested_by": users["bob"]},
        )
        return report

    monkeypatch.setattr(drift, "drift_build", asked_for_meanwhile)

    drift.drift_record(project=demo_project)

    state = DriftState.objects.get(project=demo_project)
    assert state.checked_at is not None and state.checking  # still waiting for its own check


def test_a_viewer_reads_the_drift_but_may_not_ask_for_a_check(client, demo_project, users):
    drift.drift_record(project=demo_project)
    client.force_login(users["vera"])

    html = page_of(client)
    refused = client.post(reverse("project_drift_check", args=["inventory"]))

    assert "prod lacks these 3 revisions that staging has" in html
    assert 'id="drift-check-now"' not in html
    assert refused.status_code == 403
    assert "asking for a check takes the developer or release manager role" in (
        refused.content.decode()
    )
    assert DriftState.objects.get(project=demo_project).requested_at is None
