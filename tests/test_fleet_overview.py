"""The overview of a fleet: the counts of every status at the top, what needs attention first
(a database that cannot be read before one merely behind), and filters by text, status and
label that the region's poll keeps."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from environments.models import CurrentState, Environment
from tests.conftest import add_tenants, env, pg_url, read_all

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(demo_project, closed_port):
    """dev current, staging 3 behind, prod 6 behind, one unreachable, one never read."""
    gone = Environment(project=demo_project, name="gone", slug="gone", position=5)
    gone.set_url(pg_url("x", port=closed_port))
    gone.save()
    read_all(demo_project)
    fresh = Environment(project=demo_project, name="fresh", slug="fresh", position=6)
    fresh.set_url("sqlite:////nonexistent/fresh.db")
    fresh.save()
    for slug, labels in (("prod", {"tier": "prod"}), ("gone", {"tier": "prod"})):
        environment = env(demo_project, slug)
        environment.labels = labels
        environment.save()
    return demo_project


def _page(client, **params) -> str:
    return client.get(reverse("overview"), params).content.decode()


def _counts(html: str) -> list[str]:
    counts = html.split('data-testid="counts"')[1].split("</p>")[0]
    return [" ".join(text.split()) for text in re.findall(r'class="count[^>]*>([^<]*)<', counts)]


def _cards(html: str) -> list[str]:
    return re.findall(r'<article class="card[^"]*" id="env-\d+" data-environment="([^"]+)"', html)


def _attention(html: str) -> list[str]:
    return re.findall(r'attention-row"><td data-label="Environment"><a [^>]*>([^<]*)</a>', html)


def test_the_overview_counts_every_status_and_lists_what_needs_attention_first(client_alice, fleet):
    html = _page(client_alice)

    assert _counts(html) == ["1 current", "2 behind", "1 unreachable", "1 not read yet"]
    assert _attention(html) == [
        "inventory / gone",
        "inventory / prod",  # 6 behind before 3
        "inventory / staging",
        "inventory / fresh",
    ]
    assert not CurrentState.objects.filter(environment__slug="fresh", checked_at__isnull=False)


@pytest.mark.parametrize(
    ("params", "cards"),
    [
        ({"q": "stag"}, ["staging"]),
        ({"q": "prod"}, ["prod", "gone"]),  # its name, or its label
        ({"q": "tier=prod"}, ["prod", "gone"]),
        ({"status": "behind"}, ["staging", "prod"]),
        ({"label": "tier:prod"}, ["prod", "gone"]),
        ({"label": "tier:prod", "status": "unreachable"}, ["gone"]),
        ({"status": "not_read"}, ["fresh"]),
        ({"q": "nothing-like-it"}, []),
    ],
)
def test_the_filters_narrow_the_cards_and_the_counts_stay_whole(client_alice, fleet, params, cards):
    html = _page(client_alice, **params)

    assert _cards(html) == cards
    assert _counts(html) == ["1 current", "2 behind", "1 unreachable", "1 not read yet"]
    assert f"showing {len(cards)} of 5" in html
    assert ("No environment matches these filters." in html) == (not cards)


def test_the_poll_keeps_the_filters_and_a_bad_label_is_a_sentence(client_alice, fleet):
    html = _page(client_alice, status="behind", label="tier:prod")
    poll = re.search(r'hx-get="([^"]+)"', html.split('id="projects"')[1]).group(1)
    bad = client_alice.get(reverse("overview"), {"label": "tier"})

    assert "status=behind" in poll and "label=tier%3Aprod" in poll
    assert poll.count("since=") == 1
    assert bad.status_code == 400
    assert "&#x27;tier&#x27; is not a label filter: write name:value." in bad.content.decode()


@pytest.mark.parametrize("page", ["²", "1" * 5000, "x", "2.5"])
def test_a_page_that_is_not_a_whole_number_is_a_400_with_a_sentence(client_alice, fleet, page):
    response = client_alice.get(reverse("overview"), {"page": page})

    assert response.status_code == 400
    assert "The page must be a whole number" in response.content.decode()


def test_the_overview_of_300_environments_asks_the_database_what_it_asks_for_90(
    client_alice, inventory, make_project, demo_templates, tmp_path
):
    project = make_project(inventory, {}, name="fleet")
    params = {"group": "tier", "q": "acme"}
    add_tenants(project, demo_templates, tmp_path, range(90))
    with CaptureQueriesContext(connection) as ninety:
        small = _page(client_alice, **params)
    add_tenants(project, demo_templates, tmp_path, range(90, 300))
    with CaptureQueriesContext(connection) as three_hundred:
        large = _page(client_alice, **params)

    assert len(three_hundred) == len(ninety)
    assert _counts(small) == ["30 current", "60 behind"]
    assert _counts(large) == ["100 current", "200 behind"]
    assert small.count('data-testid="environment-row"') == 90
    assert large.count('data-testid="environment-row"') == 100  # a page, as the database cut it
    assert "Page 1 of 3" in " ".join(large.split())
    # grouped by the label, in the database's order, a page at a time
    assert re.findall(r'data-testid="group">([^<]+)<', large) == ["tier=dev"]
    second = _page(client_alice, page=2, **params)
    assert re.findall(r'data-testid="group">([^<]+)<', second) == ["tier=prod"]


def test_a_label_named_like_a_number_is_a_name_and_an_odd_one_matches_nothing(client_alice, fleet):
    prod = env(fleet, "prod")
    prod.labels = {"tier": "prod", "2024": "cohort"}
    prod.save()

    by_number = _page(client_alice, label="2024:cohort")
    grouped = _page(client_alice, group="2024", status="behind")
    odd = client_alice.get(reverse("overview"), {"label": "-1:x", "group": '-1"'})

    assert _cards(by_number) == ["prod"]
    assert "showing 2 of 5" in grouped  # cards, not a table: two environments shown
    assert odd.status_code == 200
    assert "No environment matches these filters." in odd.content.decode()


def test_the_text_filter_folds_case_beyond_ascii(client_alice, fleet):
    zurich = env(fleet, "staging")
    zurich.name = "Zürich"
    zurich.save()

    assert _cards(_page(client_alice, q="ZÜRICH")) == ["staging"]
    assert _cards(_page(client_alice, q="zür tier=")) == []  # staging has no labels
