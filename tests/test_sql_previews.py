"""A plan's SQL (`alembic … --sql`, a worker's job: it runs env.py) is rendered when someone
will read it — approvers, the lock review of its statements, or a person who asks — and not
for a CLI job on an environment with no approval step."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.urls import reverse

from environments import approvals, planning
from environments.models import ApiToken, Job

# tasks go to a queue nobody consumes (the test runs what it needs itself)
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("unconsumed_queue")]


def _cli_job(environment, *options) -> Job:
    call_command(
        "request_job",
        environment.project.slug,
        environment.slug,
        "--kind=upgrade",
        "--target=heads",
        "--as=bob",
        *options,
        stdout=open("/dev/null", "w"),  # noqa: SIM115 - the JSON line is not what is tested
    )
    return Job.objects.latest("pk")


def test_a_cli_job_nobody_approves_renders_no_sql_until_someone_asks(
    demo_project, users, client_alice, django_capture_on_commit_callbacks
):
    staging = demo_project.environments.get(slug="staging")

    with django_capture_on_commit_callbacks(execute=True) as sent:
        job = _cli_job(staging)

    job.refresh_from_db()
    assert job.status == "queued" and job.sql_status == "on_request"
    assert len(sent) == 1 and job.dispatched_at is not None  # the run was sent...
    assert job.preview_sent_at is None  # ...and no worker was asked to run env.py for SQL
    page = client_alice.get(job.get_absolute_url()).content.decode()
    assert "Not rendered: nobody has to read it before this job runs" in page
    assert 'id="render-sql"' in page

    with django_capture_on_commit_callbacks(execute=True):
        client_alice.post(reverse("job_action", args=[job.pk, "sql"]))
    job.refresh_from_db()
    assert job.sql_status == "pending" and job.preview_sent_at is not None
    planning.job_preview_sql(job_id=job.pk)  # what the worker does with the message
    shown = client_alice.get(job.get_absolute_url()).content.decode()
    assert 'id="sql-preview"' in shown and "ALTER TABLE" in shown
    assert "Not rendered" not in shown


def test_a_plan_made_on_its_page_or_asked_for_over_the_api_or_cli_renders_its_sql(
    demo_project, users, client_alice, client
):
    staging = demo_project.environments.get(slug="staging")
    _, token = ApiToken.issue(user=users["bob"], name="ci")

    client_alice.post(
        reverse("job_new", args=[demo_project.slug, staging.slug]),
        {"kind": "upgrade", "target": "heads"},
    )
    from_page = Job.objects.latest("pk")
    from_page_status = from_page.sql_status
    planning.job_cancel(job=from_page, user=users["alice"])
    over_api = client.post(
        reverse("api_job_create", args=[demo_project.slug, staging.slug]),
        {"kind": "upgrade", "target": "heads", "submit": False, "sql": True},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    ).json()
    without = client.post(
        reverse("api_job_create", args=[demo_project.slug, staging.slug]),
        {"kind": "upgrade", "target": "heads", "submit": False},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    ).json()
    for waiting in Job.objects.filter(status="planned"):
        planning.job_cancel(job=waiting, user=users["alice"])
    from_cli = _cli_job(staging, "--sql")

    assert from_page_status == "pending"
    assert over_api["sql_status"] == "pending"
    assert without["sql_status"] == "on_request"
    assert from_cli.sql_status == "pending"


def test_a_plan_approvers_or_the_lock_review_will_read_renders_its_sql_at_once(policed, users):
    prod = policed.environments.get(slug="prod")  # two approvals
    dev = policed.environments.get(slug="dev")
    staging = policed.environments.get(slug="staging")
    staging.required_approvals = 0
    staging.lock_review_blocks = "danger"  # no approver, but its SQL is reviewed
    staging.save()

    for_approvers = planning.job_request(
        environment=prod, kind="upgrade", target="heads", user=users["bob"]
    )
    for_review = planning.job_request(
        environment=staging, kind="upgrade", target="heads", user=users["bob"]
    )
    on_dev = planning.job_request(environment=dev, kind="downgrade", target="-1", user=users["bob"])

    assert for_approvers.sql_status == "pending"
    assert for_review.sql_status == "pending"
    assert on_dev.sql_status == "on_request"  # dev: nobody approves or reviews


def test_a_plan_submitted_once_its_environment_wants_approvals_asks_for_its_sql(
    demo_project, users, django_capture_on_commit_callbacks
):
    staging = demo_project.environments.get(slug="staging")
    job = planning.job_request(
        environment=staging, kind="upgrade", target="heads", user=users["bob"]
    )
    staging.required_approvals = 1
    staging.save()
    job.refresh_from_db()
    planned_status = job.sql_status

    with django_capture_on_commit_callbacks(execute=True):
        submitted = approvals.job_submit(job=job, user=users["bob"])
    submitted.refresh_from_db()

    assert planned_status == "on_request"
    assert submitted.status == "awaiting_approval"
    assert submitted.sql_status == "pending"  # approvers read the plan with its SQL
    assert submitted.preview_sent_at is not None


def test_a_viewer_cannot_ask_for_a_plans_sql(demo_project, users, client):
    staging = demo_project.environments.get(slug="staging")
    job = planning.job_request(
        environment=staging, kind="upgrade", target="heads", user=users["bob"]
    )
    client.force_login(users["vera"])

    page = client.get(job.get_absolute_url()).content.decode()
    response = client.post(reverse("job_action", args=[job.pk, "sql"]))

    assert 'id="render-sql"' not in page
    assert response.status_code == 403
    assert "may not ask for the SQL" in response.content.decode()
    job.refresh_from_db()
    assert job.sql_status == "on_request"
