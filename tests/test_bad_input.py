"""Bad input gets a 400 and a sentence, never a 500 or a silent surprise: parameters, files,
URLs, and a submit that is refused."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from dashboard.lib import secretbox
from environments import planning, reads
from environments.core.database_urls import AMBIGUOUS_URL
from environments.forms import EnvironmentForm
from environments.models import ApiToken, AuditEvent, Environment, Job
from tests.conftest import env

pytestmark = pytest.mark.django_db


# --- parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["/api/v1/status?project=%00", "/?project=%00", "/audit/?actor=a%00b"]
)
def test_a_nul_character_in_a_parameter_is_a_400_with_a_sentence(client_alice, url):
    response = client_alice.get(url)

    assert response.status_code == 400
    assert "holds a NUL character (%00), which no field accepts" in response.content.decode()


def test_a_nul_character_in_a_form_is_a_400(client_alice, demo_project):
    response = client_alice.post(
        reverse("job_new", args=["inventory", "dev"]),
        {"kind": "downgrade", "target": "-1", "reason": "oops\x00"},
    )

    assert response.status_code == 400
    assert not Job.objects.exists()


@pytest.mark.parametrize("which", ["audit_log", "audit_export"])
def test_an_impossible_date_is_a_400_with_a_sentence_not_every_event(client_alice, which):
    args = ["csv"] if which == "audit_export" else []

    response = client_alice.get(reverse(which, args=args), {"date_to": "9999-12-31"})

    assert response.status_code == 400
    assert "date to: Pick a date before the year 9999." in response.content.decode()


def test_a_backup_that_is_not_a_number_is_a_400_on_the_page_and_the_api(
    client, client_alice, demo_project, users
):
    _, token = ApiToken.issue(user=users["alice"], name="ci")

    page = client_alice.post(
        reverse("job_new", args=["inventory", "dev"]), {"kind": "restore", "backup": "abc"}
    )
    api = client.post(
        reverse("api_job_create", args=["inventory", "dev"]),
        {"kind": "restore", "restore_from": "abc"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )

    assert page.status_code == 400
    assert "The backup must be a whole number, not &#x27;abc&#x27;." in page.content.decode()
    assert api.status_code == 400
    assert api.json()["error"] == (
        "restore_from (a backup's number) must be a whole number, not 'abc'."
    )


# --- no orphans ----------------------------------------------------------------------------


def test_a_refused_api_submit_leaves_no_planned_job_behind(client, demo_project, users):
    _, token = ApiToken.issue(user=users["bob"], name="ci")
    dev = env(demo_project, "dev")
    holder = planning.job_request(environment=dev, kind="downgrade", target="-1", user=users["bob"])
    Job.objects.filter(pk=holder.pk).update(status=Job.Status.QUEUED)

    responses = [
        client.post(
            reverse("api_job_create", args=["inventory", "dev"]),
            {"kind": "downgrade", "target": "-1"},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        for _ in range(3)
    ]

    assert [r.status_code for r in responses] == [409] * 3
    assert {r.json()["code"] for r in responses} == {"environment_busy"}
    assert not Job.objects.filter(status=Job.Status.PLANNED).exists()
    discarded = AuditEvent.objects.filter(action="job_discarded")
    assert discarded.count() == 3
    assert {event.details["reason"] for event in discarded} == {"environment_busy"}


# --- apply_config --------------------------------------------------------------------------


def _apply(tmp_path: Path, text: str) -> str:
    path = tmp_path / "retort.toml"
    path.write_text(text)
    with pytest.raises(CommandError) as error:
        call_command("apply_config", str(path), stdout=StringIO())
    return str(error.value)


PROJECT = '[[project]]\nname = "inventory"\nscript_location = "m"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            PROJECT + '[[project.environment]]\nname = "dev"\nurl = "sqlite:///a.db"\n'
            '[[project.environment]]\nname = "dev"\nurl = "sqlite:///b.db"\n',
            "retort.toml line 7: project #1 environment #2 has the name 'dev' of project #1 "
            "environment #1: each environment appears once in its project. Remove one of them, "
            "or give it another name.",
        ),
        (
            PROJECT + "\n" + PROJECT,
            "retort.toml line 5: project #2 has the name 'inventory' of project #1: each project "
            "appears once in the file. Remove one of them, or give it another name.",
        ),
        (
            '[[project]]\nname = "inventory"\nslug = "not a slug"\nscript_location = "m"\n',
            "retort.toml line 1: project #1: slug: Enter a valid “slug” consisting of letters, "
            "numbers, underscores or hyphens.",
        ),
        (
            PROJECT + '[[project.environment]]\nname = "dev"\n\nurl_from_env = 5\n',
            "retort.toml line 7: project #1 environment #1.url_from_env must name an environment "
            "variable.",
        ),
        (
            PROJECT + 'environment = ["dev"]\n',
            "project #1 environment #1 must be a [[project.environment]] table.",
        ),
        (
            PROJECT + '[[project.environment]]\nname = "prod"\n'
            'url = "postgresql://app:p@ss@db.internal/prod"\n',
            "retort.toml line 6: project #1 environment #1.url: " + AMBIGUOUS_URL,
        ),
    ],
)
def test_a_bad_file_is_refused_with_a_sentence_naming_the_line(tmp_path, text, message):
    assert _apply(tmp_path, text).endswith(message)
    assert not Environment.objects.exists()


# --- URLs ----------------------------------------------------------------------------------


def test_a_url_with_an_unencoded_at_is_refused_where_it_is_registered(demo_project):
    prod = env(demo_project, "prod")
    ambiguous = "postgresql://app:s3cr@t-tail@db.internal:5432/prod"

    with pytest.raises(ValueError, match="percent-encode|Percent-encode"):
        prod.set_url(ambiguous)
    form = EnvironmentForm(
        data={"project": demo_project.pk, "name": "prod", "slug": "prod", "url": ambiguous},
        instance=prod,
    )

    assert not form.is_valid()
    assert form.errors["url"] == [AMBIGUOUS_URL]


def test_an_ambiguous_url_stored_before_is_never_shown_nor_connected_to(demo_project):
    prod = env(demo_project, "prod")
    prod.url_encrypted = secretbox.encrypt("postgresql://app:s3cr@t-tail@db.internal:5432/prod")
    prod.save()

    snapshot = reads.environment_read(environment=prod)

    assert prod.url_for_display == "postgresql://***"
    assert snapshot.status == "error"
    assert snapshot.error == AMBIGUOUS_URL
    assert "t-tail" not in json.dumps(snapshot.as_status_dict()) + prod.url_for_display


# --- errors in the site's words -------------------------------------------------------------


def test_the_status_api_answers_404_for_what_does_not_exist(client_alice, demo_project):
    project = client_alice.get(reverse("api_status"), {"project": "nope"})
    environment = client_alice.get(reverse("api_status"), {"project": "inventory", "env": "qa"})

    assert project.status_code == environment.status_code == 404
    assert project.json() == {"error": "No project 'nope'.", "code": "not_found"}
    assert environment.json() == {"error": "No environment 'qa'.", "code": "not_found"}


def test_an_api_404_is_json_and_a_page_404_has_the_sites_layout(client_alice, demo_project):
    api = client_alice.get("/api/v1/jobs/999999")
    unknown_api = client_alice.get("/api/v1/nothing-here")
    page = client_alice.get("/projects/nope/")

    assert api.status_code == unknown_api.status_code == page.status_code == 404
    assert api.json()["code"] == unknown_api.json()["code"] == "not_found"
    html = page.content.decode()
    assert 'class="topbar"' in html and "Back to the overview" in html
    assert "There is nothing here" in html


def test_a_500_is_a_sentence_with_a_way_back(client_alice):
    from dashboard import views as site

    request = client_alice.get("/").wsgi_request
    page = site.server_error(request)
    request.path = "/api/v1/status"
    api = site.server_error(request)

    assert page.status_code == api.status_code == 500
    assert "Back to the overview" in page.content.decode()
    assert json.loads(api.content)["code"] == "server_error"
