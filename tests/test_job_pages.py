"""The job pages without a worker: planning, refusals in words, queueing and cancelling."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from environments import planning
from environments.models import Job
from examples.inventory import revisions as inv

# tasks go to a queue nobody consumes (the test runs what it needs itself)
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("unconsumed_queue")]


def _plan(client, environment, **fields):
    url = reverse("job_new", args=[environment.project.slug, environment.slug])
    return client.post(url, {"kind": "upgrade", "target": "heads", **fields})


def test_planning_leads_to_the_plan_with_its_revisions_in_order(client_alice, demo_project):
    prod = demo_project.environments.get(slug="prod")

    response = _plan(client_alice, prod, reason="release 4.2")

    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    html = client_alice.get(job.get_absolute_url()).content.decode()
    assert job.status == "planned" and job.from_heads == [inv.PROD_TARGET]
    assert len(job.revisions) == 6 and job.to_heads == [inv.HEAD]
    table = html[html.index('id="plan-revisions"') :]
    positions = [table.index(f"<code>{rev}</code>") for rev in job.revisions]
    assert positions == sorted(positions)
    assert "drops column products.legacy_flag" in html
    assert "A worker is rendering the SQL" in html
    assert "Queue this job" in html


def test_a_plan_that_changes_nothing_is_refused_in_words(client_alice, demo_project):
    dev = demo_project.environments.get(slug="dev")

    response = _plan(client_alice, dev)

    assert response.status_code == 400
    assert "would change nothing" in response.content.decode()
    assert not Job.objects.exists()


def test_a_typed_target_wins_and_a_bad_one_is_explained_escaped(client_alice, demo_project):
    prod = demo_project.environments.get(slug="prod")

    response = _plan(client_alice, prod, target_text="<img src=x onerror=alert(1)>")

    html = response.content.decode()
    assert response.status_code == 400
    assert "is not a revision here" in html
    assert "<img src=x" not in html and "&lt;img src=x" in html


def test_a_second_job_cannot_be_queued_while_one_is_active(client_alice, demo_project):
    prod = demo_project.environments.get(slug="prod")
    _plan(client_alice, prod)
    _plan(client_alice, prod, target="+1")
    first, second = Job.objects.order_by("pk")
    client_alice.post(reverse("job_action", args=[first.pk, "queue"]))

    response = client_alice.post(reverse("job_action", args=[second.pk, "queue"]))

    assert response.status_code == 409
    assert f"already has a job queued or running (job #{first.pk}, queued)" in (
        response.content.decode()
    )
    assert Job.objects.get(pk=second.pk).status == "planned"


def test_a_queued_job_is_cancelled_from_its_page(client_alice, demo_project):
    prod = demo_project.environments.get(slug="prod")
    _plan(client_alice, prod)
    job = Job.objects.get()
    client_alice.post(reverse("job_action", args=[job.pk, "queue"]))

    client_alice.post(reverse("job_action", args=[job.pk, "cancel"]))

    job.refresh_from_db()
    assert job.status == "cancelled"
    live = client_alice.get(reverse("job_live", args=[job.pk]), HTTP_HX_REQUEST="true")
    assert live.status_code == 286  # htmx stops polling a finished job


def test_the_environment_page_lists_jobs_and_offers_targets(client_alice, demo_project):
    prod = demo_project.environments.get(slug="prod")
    _plan(client_alice, prod)

    html = client_alice.get(prod.get_absolute_url()).content.decode()

    assert f'<option value="{inv.HEAD}">' in html
    assert "Plan the job" in html
    assert f'href="{Job.objects.get().get_absolute_url()}"' in html


def test_a_refused_job_form_keeps_what_was_typed(client_alice, demo_project):
    response = client_alice.post(
        reverse("job_new", args=["inventory", "staging"]),
        {
            "kind": "downgrade",
            "target": "heads",
            "target_text": "nonsense-target",
            "reason": "ticket OPS-77 <b>",
            "backup_choice": "1",
        },
    )

    html = response.content.decode()
    assert response.status_code in (400, 409)
    assert 'id="job-error"' in html
    assert 'value="nonsense-target"' in html
    assert 'value="ticket OPS-77 &lt;b&gt;"' in html
    assert '<input type="radio" name="kind" value="downgrade" checked>' in html
    assert 'id="job-backup" checked' not in html  # unticked as sent


def test_a_viewer_sees_no_button_the_role_does_not_allow(client, demo_project, users):

    job = planning.job_request(
        environment=demo_project.environments.get(slug="dev"),
        kind="downgrade",
        target="-1",
        user=users["bob"],
    )
    client.force_login(users["vera"])
    viewer = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    client.force_login(users["bob"])
    requester = client.get(reverse("job_detail", args=[job.pk])).content.decode()

    assert 'id="queue-job"' not in viewer and "Discard" not in viewer
    assert "You can follow this job; acting on it takes the developer" in viewer
    assert 'id="queue-job"' in requester and "Discard" in requester


def test_pages_show_no_server_paths(client_alice, demo_project, tmp_path):
    from environments.models import Backup

    dev = demo_project.environments.get(slug="dev")
    backup_file = tmp_path / "backups" / "inventory" / "dev" / "20261202-job1.sqlite"
    backup_file.parent.mkdir(parents=True)
    backup_file.write_bytes(b"x")
    backup = Backup.objects.create(
        environment=dev, kind="sqlite", path=str(backup_file), size=1, sha256="0" * 64, heads=[]
    )
    job = Job.objects.create(
        environment=dev, kind="downgrade", target="-1", status="succeeded", backup=backup
    )

    pages = [
        client_alice.get(reverse("job_detail", args=[job.pk])).content.decode(),
        client_alice.get(reverse("revision_panel", args=["inventory", inv.HEAD])).content.decode(),
        client_alice.get(reverse("environment_detail", args=["inventory", "dev"])).content.decode(),
    ]

    assert "20261202-job1.sqlite" in pages[0]
    assert "migrations/versions/" in pages[1]
    project_folder = demo_project.alembic_ini.rsplit("/", 1)[0]
    for html in pages:
        assert str(backup_file.parent) not in html
        assert f"{project_folder}/migrations" not in html


def test_a_failed_run_says_where_it_stopped(client_alice, demo_project):
    dev = demo_project.environments.get(slug="dev")
    job = Job.objects.create(
        environment=dev,
        kind="upgrade",
        target="heads",
        status="failed",
        revisions=["aaa", "bbb", "ccc"],
        progress_done=2,
        error="table audit_notes already exists — in revision bbb (2 of 3).",
    )

    html = client_alice.get(reverse("job_detail", args=[job.pk])).content.decode()

    assert "stopped in revision 2 of 3" in html
    assert "table audit_notes already exists — in revision bbb (2 of 3)." in html


def test_the_plan_sha_is_shown_once_the_sql_it_covers_is_rendered(
    client_alice, demo_project, users
):

    job = planning.job_request(
        environment=demo_project.environments.get(slug="staging"),
        kind="upgrade",
        target="heads",
        user=users["alice"],
        sql=True,  # the page shows the SQL being rendered, then rendered
    )
    rendering = client_alice.get(reverse("job_detail", args=[job.pk])).content.decode()

    planning.job_preview_sql(job_id=job.pk)
    job.refresh_from_db()
    rendered = client_alice.get(reverse("job_detail", args=[job.pk])).content.decode()

    assert "Rendering the SQL for staging…" in rendering
    assert 'id="plan-sha"' not in rendering
    assert job.sql_status == "ready"
    assert f'<code id="plan-sha">{job.plan_sha256}</code>' in rendered


# --- live regions: a poll costs nothing until something changes -----------------------------


def _since(html: str, url: str) -> str:
    """The fingerprint a rendered region polls with."""
    return re.search(re.escape(url) + r"\?since=([0-9a-f]+|never)", html).group(1)


def test_a_job_pages_poll_answers_nothing_until_the_job_changes_then_stops_when_it_ends(
    client_alice, demo_project, users, settings
):
    settings.RETORT_LIVE_REFRESH_SECONDS = 10**9  # no re-render merely because time passed

    job = planning.job_request(
        environment=demo_project.environments.get(slug="staging"),
        kind="upgrade",
        target="heads",
        user=users["alice"],
        sql=True,  # the page shows the SQL being rendered, then rendered
    )
    url = reverse("job_live", args=[job.pk])
    # the page (still) reads the database as it renders: its first poll may render once more
    shown = client_alice.get(job.get_absolute_url()).content.decode()
    first = client_alice.get(url, {"since": _since(shown, url)}, HTTP_HX_REQUEST="true")
    since = _since(first.content.decode(), url) if first.status_code == 200 else _since(shown, url)

    unchanged = client_alice.get(url, {"since": since}, HTTP_HX_REQUEST="true")
    planning.job_preview_sql(job_id=job.pk)  # the SQL arrives
    changed = client_alice.get(url, {"since": since}, HTTP_HX_REQUEST="true")
    client_alice.post(reverse("job_action", args=[job.pk, "cancel"]))
    ended = client_alice.get(url, {"since": _since(changed.content.decode(), url)})

    assert unchanged.status_code == 204 and unchanged.content == b""
    assert changed.status_code == 200
    body = changed.content.decode()
    assert 'id="sql-preview"' in body and "Ask for approval" not in body  # staging: no approval
    assert "Queue this job" in body and _since(body, url) != since
    assert ended.status_code == 200 and "cancelled" in ended.content.decode()
    assert "hx-trigger" not in ended.content.decode().split('id="job-live"')[1].split(">")[0]


def test_the_nav_count_and_the_approvals_list_answer_a_poll_with_204_until_a_request_comes(
    client_alice, demo_project, users, settings
):
    settings.RETORT_LIVE_REFRESH_SECONDS = 10**9
    from tests.conftest import env, planned

    page = client_alice.get(reverse("approvals")).content.decode()
    nav_url, list_url = reverse("nav_live"), reverse("approvals_live")
    nav_since, list_since = _since(page, nav_url), _since(page, list_url)
    quiet = [
        client_alice.get(nav_url, {"since": nav_since}).status_code,
        client_alice.get(list_url, {"since": list_since}).status_code,
    ]
    prod = env(demo_project, "prod")
    prod.required_approvals = 1
    prod.save()
    from environments import approvals

    approvals.job_submit(job=planned(prod, users["bob"]), user=users["bob"])

    nav = client_alice.get(nav_url, {"since": nav_since})
    waiting = client_alice.get(list_url, {"since": list_since})

    assert quiet == [204, 204]
    assert nav.status_code == 200 and 'data-testid="approvals-count">1<' in nav.content.decode()
    assert waiting.status_code == 200
    assert waiting.content.decode().count('data-testid="approval-request"') == 1


def test_a_poll_of_a_finished_job_gets_the_region_with_286_even_when_nothing_changed(
    client_alice, demo_project, users
):
    job = planning.job_request(
        environment=demo_project.environments.get(slug="dev"),
        kind="downgrade",
        target="-1",
        user=users["alice"],
    )
    url = reverse("job_live", args=[job.pk])
    planning.job_cancel(job=job, user=users["alice"])
    first = client_alice.get(url, HTTP_HX_REQUEST="true")
    shown = re.search(r'data-live-key="([0-9a-f]+)"', first.content.decode())

    again = client_alice.get(url, {"since": shown.group(1)}, HTTP_HX_REQUEST="true")

    assert first.status_code == again.status_code == 286
    assert 'id="job-live"' in again.content.decode()  # htmx 2 swaps it: never an empty body


def test_a_poll_after_the_session_ended_sends_the_browser_to_log_in(client, demo_project):
    url = reverse("nav_live")

    poll = client.get(
        url,
        {"since": "x"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/approvals/",
    )
    plain = client.get(url)

    assert poll.status_code == 200 and poll["HX-Redirect"] == "/login/?next=/approvals/"
    assert poll.content == b""
    assert plain.status_code == 302 and plain["Location"].startswith("/login/?next=/live/nav")
