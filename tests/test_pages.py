"""What a logged-in person sees on the overview and environment pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

from environments import reads
from environments.models import CurrentState
from examples.inventory import revisions as inv
from tests.conftest import alembic, env, pg_url, read_all, write_revision

pytestmark = pytest.mark.django_db


def _card_html(html: str, slug: str) -> str:
    start = html.index(f'data-environment="{slug}"')
    return html[start : html.index("</article>", start)]


def test_the_overview_shows_each_environment_side_by_side_in_promotion_order(
    client_alice, demo_project
):
    html = client_alice.get(reverse("overview")).content.decode()

    assert html.index('aria-label="dev"') < html.index('aria-label="staging"')
    assert html.index('aria-label="staging"') < html.index('aria-label="prod"')
    assert ">current</span>" in _card_html(html, "dev")
    assert ">3 behind</span>" in _card_html(html, "staging")
    assert ">6 behind</span>" in _card_html(html, "prod")
    prod = _card_html(html, "prod")
    assert inv.PROD_TARGET[:12] in prod
    assert "index users.name" in prod.lower() or "ix_users_name" in prod.lower()
    assert "<strong>6</strong> pending revisions" in prod
    assert "Checked" in prod


def test_page_loads_keep_one_state_per_environment(client_alice, demo_project):
    client_alice.get(reverse("overview"))
    client_alice.get(reverse("overview"))

    assert CurrentState.objects.filter(environment__project=demo_project).count() == 3


def test_the_htmx_poll_gets_the_projects_fragment_then_nothing_until_a_state_changes(
    client_alice, demo_project
):
    first = client_alice.get(reverse("overview"), headers={"HX-Request": "true"})
    html = first.content.decode()
    since = re.search(r"since=(\w+)", html).group(1)
    unchanged = client_alice.get(
        reverse("overview"), {"since": since}, headers={"HX-Request": "true"}
    )
    alembic(
        Path(demo_project.alembic_ini), env(demo_project, "staging").get_url(), "upgrade", "head"
    )
    read_all(demo_project)  # a worker's scheduled read
    changed = client_alice.get(
        reverse("overview"), {"since": since}, headers={"HX-Request": "true"}
    )

    assert html.lstrip().startswith('<div id="projects"')
    assert "<html" not in html
    assert 'hx-trigger="every 10s"' in html
    assert unchanged.status_code == 204
    assert changed.status_code == 200
    assert ">current</span>" in _card_html(changed.content.decode(), "staging")


def test_refresh_with_the_broker_down_reads_in_the_post_and_answers_with_its_card_only(
    client_alice, demo_project, closed_port, monkeypatch
):
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{closed_port}/0")
    staging = demo_project.environments.get(slug="staging")
    alembic(Path(demo_project.alembic_ini), staging.get_url(), "upgrade", "head")
    prod_read = env(demo_project, "prod").stored_state().checked_at

    response = client_alice.post(
        reverse("environment_refresh", args=["inventory", "staging"]),
        headers={"HX-Request": "true"},
    )
    html = response.content.decode()

    assert html.lstrip().startswith("<article")
    assert html.count("<article") == 1
    assert ">current</span>" in html and "Reading" not in html
    assert staging.stored_state().status == "current"
    assert env(demo_project, "prod").stored_state().checked_at == prod_read


def test_refresh_without_javascript_goes_to_the_environment_page(client_alice, demo_project):
    response = client_alice.post(reverse("environment_refresh", args=["inventory", "prod"]))

    assert response.status_code == 302
    assert response["Location"] == reverse("environment_detail", args=["inventory", "prod"])


def test_the_environment_page_lists_pending_in_apply_order_and_applied_history(
    client_alice, demo_project
):
    html = client_alice.get(
        reverse("environment_detail", args=["inventory", "prod"])
    ).content.decode()

    pending = html[html.index('id="pending"') : html.index("</table>", html.index('id="pending"'))]
    applied = html[html.index('id="applied"') : html.index("</table>", html.index('id="applied"'))]
    position = inv.ALL_REVISIONS.index(inv.PROD_TARGET)
    expected_pending = inv.ALL_REVISIONS[position + 1 :]
    assert [pending.index(rev) for rev in expected_pending] == sorted(
        pending.index(rev) for rev in expected_pending
    )
    for rev in inv.ALL_REVISIONS[: position + 1]:
        assert rev in applied
        assert rev not in pending
    assert applied.index(inv.PROD_TARGET) < applied.index(inv.CREATE_USERS)
    assert ">reporting</span>" in applied
    assert ">merge</span>" in applied


def test_an_unreachable_environment_is_explained_in_words(
    client_alice, inventory, make_project, closed_port
):
    read_all(make_project(inventory, {"prod": pg_url("x", password="S3cret-pw", port=closed_port)}))

    response = client_alice.get(reverse("overview"))
    html = response.content.decode()

    assert response.status_code == 200
    assert ">unreachable</span>" in html
    assert "Cannot reach the database" in html
    assert "Traceback" not in html
    assert "S3cret-pw" not in html


def test_a_message_with_markup_is_shown_escaped(client_alice, inventory, make_project, sqlite_url):
    versions = inventory.parent / "migrations" / "versions"
    payload = '<script>alert("owned")</script><img src=x onerror=alert(1)>'
    write_revision(versions, "bad000000001", inv.HEAD, message=payload)
    at_payload, before_payload = sqlite_url("dev"), sqlite_url("prod")
    alembic(inventory, at_payload, "upgrade", "head")
    alembic(inventory, before_payload, "upgrade", inv.HEAD)
    read_all(make_project(inventory, {"dev": at_payload, "prod": before_payload}))

    overview = client_alice.get(reverse("overview")).content.decode()
    detail = client_alice.get(
        reverse("environment_detail", args=["inventory", "prod"])
    ).content.decode()

    escaped = (
        "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    )
    assert escaped in _card_html(overview, "dev")
    assert escaped in detail[detail.index('id="pending"') :]
    for html in (overview, detail):
        assert "<script>alert" not in html
        assert "<img src=x" not in html


def test_unreadable_revision_files_are_named_on_the_overview(client_alice, demo_project):
    versions = Path(demo_project.alembic_ini).parent / "migrations" / "versions"
    (versions / "zz_broken.py").write_text("revision = 'x'\ndef upgrade(:\n")

    html = client_alice.get(reverse("overview")).content.decode()

    assert "1 problem reading the scripts; the rest loaded" in html
    assert "zz_broken.py" in html
    assert "syntax error on line 2" in html
    assert ">current</span>" in _card_html(html, "dev")


def test_a_deleted_parent_revision_file_is_said_in_words_on_the_overview(
    client_alice, demo_project
):
    versions = Path(demo_project.alembic_ini).parent / "migrations" / "versions"
    next(versions.glob(f"{inv.DROP_PRODUCTS_LEGACY_FLAG}_*.py")).unlink()

    response = client_alice.get(reverse("overview"))
    html = response.content.decode()

    assert response.status_code == 200
    assert "The script directory cannot be read: The revision graph is broken:" in html
    assert f"names revision {inv.DROP_PRODUCTS_LEGACY_FLAG} as its parent" in html
    assert "Traceback" not in html


def test_several_script_heads_are_flagged_on_the_overview(client_alice, demo_project):
    versions = Path(demo_project.alembic_ini).parent / "migrations" / "versions"
    write_revision(versions, "side00000001", inv.CREATE_SHIPMENTS, message="a second head")

    html = client_alice.get(reverse("overview")).content.decode()

    text = " ".join(re.sub(r"<[^>]+>", "", html).split())
    assert (
        f"2 heads — a merge is missing: {inv.HEAD[:12]}, side00000001 diverged from "
        f"{inv.CREATE_SHIPMENTS[:12]}. alembic upgrade head fails here: merge them with alembic "
        "merge heads"
    ) in text


def test_an_unknown_project_or_environment_is_a_404(client_alice, demo_project):
    assert client_alice.get(reverse("project_detail", args=["nope"])).status_code == 404
    assert (
        client_alice.get(reverse("environment_detail", args=["inventory", "nope"])).status_code
        == 404
    )


def test_healthz_answers_without_login(client, db):
    response = client.get(reverse("healthz"))

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_the_history_lists_changes_not_reads_and_names_who_made_them(client_alice, demo_project):
    staging = demo_project.environments.get(slug="staging")
    for _ in range(6):
        reads.environment_read(environment=staging)
    alembic(Path(demo_project.alembic_ini), staging.get_url(), "upgrade", "head")
    reads.environment_read(environment=staging)

    html = client_alice.get(reverse("environment_detail", args=["inventory", "staging"])).content
    shown = html.decode().split('id="history"')[1].split("</table>")[0]

    rows = shown.split("<tr>")[2:]  # after the header
    assert len(rows) == 2  # the first read, and the upgrade; not one row per read
    assert "outside Retort" in rows[0] and ">current</span>" in rows[0]
    assert "first read" in rows[1] and "3 pending" in rows[1]


def test_a_database_that_stops_answering_is_shown_stale_with_what_was_last_known(
    client_alice, demo_project, closed_port
):
    prod = env(demo_project, "prod")
    prod.set_url(pg_url("x", port=closed_port))
    prod.save()
    read_all(demo_project)  # the workers' next read fails

    card = _card_html(client_alice.get(reverse("overview")).content.decode(), "prod")

    assert ">unreachable</span>" in card
    assert "Stale:" in card and "the last read failed just now" in card
    assert inv.PROD_TARGET[:12] in card.split("Stale:")[1]  # what it held when last read
