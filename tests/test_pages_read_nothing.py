"""A GET never connects to a target database nor writes a row: the workers read, the pages
render what they stored. Counted with SQLAlchemy's events (every target connection and
statement goes through SQLAlchemy) and Django's captured queries (the dashboard's own)."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from sqlalchemy import event
from sqlalchemy.engine import Engine

from environments import rollout_plans, rollouts
from environments.models import ApiToken, Environment, Job
from examples.inventory import revisions as inv
from tests.conftest import approve, env, read_all, requested

pytestmark = pytest.mark.django_db

WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


@pytest.fixture
def target_traffic():
    """Every connection opened to a target database, and every statement sent to one (a kept
    session would be reused without a new connection)."""
    seen: list[str] = []

    def connected(dbapi_connection, record) -> None:
        seen.append("connect")

    def executed(conn, cursor, statement, *args) -> None:
        seen.append(statement)

    event.listen(Engine, "connect", connected)
    event.listen(Engine, "before_cursor_execute", executed)
    yield seen
    event.remove(Engine, "connect", connected)
    event.remove(Engine, "before_cursor_execute", executed)


@pytest.fixture
def fleet(policed, people, pg_database) -> dict:
    """The demo project with its policy, a PostgreSQL environment beside the SQLite ones, a job
    awaiting approval on prod, every environment read once by 'the workers'."""
    qa = Environment(project=policed, name="qa", slug="qa", position=9)
    qa.set_url(pg_database())
    qa.save()
    job = requested(env(policed, "prod"), people["bob"])
    approve(job, people["alice"])
    read_all(policed)
    rollout = rollout_plans.rollout_request(project=policed, target="heads", user=people["bob"])
    rollout = rollout_plans.rollout_plan(rollout_id=rollout.pk)  # the worker's task
    rollouts.rollout_submit(rollout=rollout, user=people["bob"])
    return {"project": policed, "job": job, "rollout": rollout}


def test_no_get_connects_to_a_target_or_writes_a_row(client, people, fleet, target_traffic):
    client.force_login(people["carol"])
    job = fleet["job"]
    pages = [
        reverse("overview"),
        reverse("project_detail", args=["inventory"]),
        reverse("environment_detail", args=["inventory", "prod"]),
        reverse("environment_detail", args=["inventory", "qa"]),
        reverse("environment_card_live", args=["inventory", "prod"]),
        reverse("project_graph", args=["inventory"]) + "?env=prod",
        reverse("revision_panel", args=["inventory", inv.HEAD]),
        reverse("project_drift", args=["inventory"]),
        reverse("project_round_trips", args=["inventory"]),
        reverse("job_detail", args=[job.pk]),
        reverse("job_live", args=[job.pk]),
        reverse("approvals"),
        reverse("approvals_live"),
        reverse("api_status"),
        reverse("api_graph", args=["inventory"]),
        reverse("api_job", args=[job.pk]),
        reverse("rollouts"),
        reverse("rollout_detail", args=[fleet["rollout"].pk]),
        reverse("rollout_live", args=[fleet["rollout"].pk]),
    ]
    target_traffic.clear()

    with CaptureQueriesContext(connection) as queries:
        statuses = {page: client.get(page).status_code for page in pages}
        polls = {
            page: client.get(page, headers={"HX-Request": "true"}).status_code for page in pages
        }

    assert set(statuses.values()) == {200}, statuses
    assert set(polls.values()) <= {200, 286}, polls
    assert target_traffic == []
    writes = [q["sql"] for q in queries.captured_queries if WRITE.match(q["sql"])]
    assert writes == []
    assert Job.objects.get(pk=job.pk).status == "awaiting_approval"


def test_a_token_that_reads_the_api_writes_its_last_use_at_most_once_an_hour(
    client, people, fleet, target_traffic
):
    _, token = ApiToken.issue(user=people["carol"], name="ci")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    client.get(reverse("api_status"), **auth)  # the first use is noted

    with CaptureQueriesContext(connection) as queries:
        answers = [client.get(reverse("api_status"), **auth) for _ in range(5)]

    assert [answer.status_code for answer in answers] == [200] * 5
    assert {row["environment"] for row in answers[0].json()} == {"dev", "staging", "prod", "qa"}
    assert not [q["sql"] for q in queries.captured_queries if WRITE.match(q["sql"])]
    assert target_traffic == []
