"""A database password never appears in a page, a log line, an error message or an export."""

from __future__ import annotations

import json
import logging
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from environments import reads
from environments.models import CurrentState, Environment, StateChange
from tests.conftest import pg_url

pytestmark = pytest.mark.django_db

PASSWORD = "Zebra-Quartz-9137"


@pytest.fixture
def secret_environment(inventory, make_project, closed_port) -> Environment:
    project = make_project(
        inventory, {"prod": pg_url("inventory", password=PASSWORD, port=closed_port)}
    )
    return project.environments.get(slug="prod")


def test_the_password_is_in_no_page_log_line_or_message(client, users, secret_environment, caplog):
    caplog.set_level(logging.DEBUG)
    users["alice"].is_staff = users["alice"].is_superuser = True
    users["alice"].save()
    client.force_login(users["alice"])

    pages = [
        client.get(reverse("overview")),
        client.get(reverse("environment_detail", args=["inventory", "prod"])),
        client.post(
            reverse("environment_refresh", args=["inventory", "prod"]),
            headers={"HX-Request": "true"},
        ),
        client.get(reverse("api_status")),
        client.get(f"/admin/environments/environment/{secret_environment.pk}/change/"),
        client.get("/admin/environments/environment/"),
        client.get(f"/admin/environments/project/{secret_environment.project.pk}/change/"),
    ]
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("migration_status", "--json", stdout=out)

    assert all(page.status_code == 200 for page in pages)
    for page in pages:
        assert PASSWORD not in page.content.decode()
    assert "inventory" in pages[1].content.decode()
    assert PASSWORD not in out.getvalue()
    assert PASSWORD not in caplog.text
    stored = list(CurrentState.objects.values_list("error", flat=True))
    stored += list(StateChange.objects.values_list("error", flat=True))
    assert stored and all(PASSWORD not in error for error in stored)
    assert all("Cannot reach the database" in error for error in stored)


def test_the_environment_page_shows_the_url_with_the_password_hidden(
    client_alice, secret_environment
):
    html = client_alice.get(
        reverse("environment_detail", args=["inventory", "prod"])
    ).content.decode()

    assert "postgresql://postgres:***@127.0.0.1" in html


def test_a_password_with_url_escapes_is_hidden_in_both_forms(inventory, make_project, closed_port):
    raw = "p@ss:w/rd%1"
    from urllib.parse import quote

    project = make_project(
        inventory, {"prod": f"postgresql://app:{quote(raw, safe='')}@127.0.0.1:{closed_port}/x"}
    )
    environment = project.environments.get(slug="prod")

    snapshot = reads.environment_read(environment=environment)

    text = json.dumps(snapshot.as_status_dict()) + environment.url_for_display
    assert raw not in text
    assert quote(raw, safe="") not in text
