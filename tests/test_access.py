"""Every page but login and the health check refuses anonymous users; logins are throttled."""

from __future__ import annotations

import time

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from environments.models import AuditEvent

pytestmark = pytest.mark.django_db

PUBLIC = {"login", "healthz"}
SAMPLE_ARGS = {
    "project_slug": "inventory",
    "env_slug": "prod",
    "revision": "2e8b5f0c7a48",
    "fmt": "csv",
    "job_id": 1,
    "action": "queue",
    "decision": "approve",
    "token_id": 1,
    "rollout_id": 1,
    "target_id": 1,
}


def _patterns(resolver: URLResolver, prefix: str = "") -> list[tuple[str, URLPattern]]:
    found = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            found += _patterns(entry, prefix + str(entry.pattern))
        else:
            found.append((prefix + str(entry.pattern), entry))
    return found


def _own_patterns():
    """Our URL patterns (the admin guards its own pages and is tested by Django)."""
    return [
        (route, pattern)
        for route, pattern in _patterns(get_resolver())
        if not route.startswith("admin/") and pattern.name not in PUBLIC
    ]


def test_the_list_of_patterns_covers_the_pages_we_serve():
    names = {pattern.name for _, pattern in _own_patterns()}

    assert {
        "overview",
        "project_detail",
        "environment_detail",
        "environment_refresh",
        "api_status",
    } <= names


@pytest.mark.parametrize("method", ["get", "post"])
def test_every_url_pattern_refuses_anonymous_users(client, demo_project, method):
    for route, pattern in _own_patterns():
        kwargs = {key: SAMPLE_ARGS[key] for key in pattern.pattern.converters}
        url = reverse(pattern.name, kwargs=kwargs)
        response = getattr(client, method)(url)
        if response.status_code == 405:
            continue  # the wrong method is refused before anything else
        if pattern.name.startswith("api_"):
            assert response.status_code == 401, route
        else:
            assert response.status_code == 302, (route, response.status_code)
            assert response["Location"].startswith(reverse("login")), route


def test_the_admin_refuses_anonymous_users(client, demo_project):
    response = client.get("/admin/environments/environment/")

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_the_admin_refuses_logged_in_non_staff(client, users):
    client.force_login(users["bob"])

    assert client.get("/admin/environments/environment/").status_code == 302


def test_logging_in_lands_on_the_overview(client, users):
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-alice"})

    assert response.status_code == 302
    assert response["Location"] == reverse("overview")


def _login(client, username: str, password: str):
    return client.post(reverse("login"), {"username": username, "password": password})


def test_repeated_wrong_passwords_lock_the_account_even_for_the_right_one(client, users, settings):
    settings.RETORT_LOGIN_ATTEMPTS = 5
    for _ in range(5):
        assert _login(client, "bob", "guess").status_code == 200

    refused = _login(client, "bob", "pw-bob")
    other = Client().post(reverse("login"), {"username": "alice", "password": "pw-alice"})

    assert refused.status_code == 200
    assert "_auth_user_id" not in client.session
    assert "Too many failed logins for this account or address. Try again in 15 minutes" in (
        refused.content.decode()
    )
    assert other.status_code == 302  # someone else is not locked out
    [event] = AuditEvent.objects.filter(action="login_throttled")
    assert event.details["username"] == "bob"


def test_the_lock_lifts_once_the_failures_leave_the_window(client, users, settings):
    settings.RETORT_LOGIN_ATTEMPTS = 3
    settings.RETORT_LOGIN_WINDOW = 2
    for _ in range(3):
        _login(client, "bob", "guess")
    assert _login(client, "bob", "pw-bob").status_code == 200  # locked…

    time.sleep(2.1)  # …until the failures are older than the window

    assert _login(client, "bob", "pw-bob").status_code == 302


def test_the_admin_login_is_throttled_too(client, users, settings):
    settings.RETORT_LOGIN_ATTEMPTS = 2
    users["alice"].is_staff = True
    users["alice"].save()
    for _ in range(2):
        client.post(reverse("admin:login"), {"username": "alice", "password": "guess"})

    response = client.post(reverse("admin:login"), {"username": "alice", "password": "pw-alice"})

    assert response.status_code == 200
    assert "Too many failed logins" in response.content.decode()
