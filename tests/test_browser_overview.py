"""The overview in a real browser: Playwright drives Debian's Chromium against a live server.

Log in, see the three demo environments with the right badges as the workers stored them,
refresh one, and see a worker's read of it land on its card without a reload.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from environments.models import Project
from examples.inventory import revisions as inv
from tests.browser import docs_screenshot, log_in
from tests.conftest import alembic

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_person_sees_the_badges_and_a_refresh_has_a_worker_read_that_card_in_place(
    page: Page, live_server, demo_project: Project, users, artifacts: Path, start_worker, settings
) -> None:
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()  # the web process sends reads there
    log_in(page, live_server.url, "alice", "pw-alice")

    expect(page.get_by_role("heading", name="Migration state")).to_be_visible()
    cards = page.locator("article.card")
    expect(cards).to_have_count(3)
    for position, env in enumerate(("dev", "staging", "prod")):
        expect(cards.nth(position)).to_have_attribute("aria-label", env)
    badge = {
        env: page.locator(f'article.card[aria-label="{env}"]').get_by_test_id("badge")
        for env in ("dev", "staging", "prod")
    }
    expect(badge["dev"]).to_have_text("current")
    expect(badge["staging"]).to_have_text("3 behind")
    expect(badge["prod"]).to_have_text("6 behind")
    docs_screenshot(page, "overview", artifacts)

    page.evaluate("() => { window.__marker = 1; }")
    staging = demo_project.environments.get(slug="staging")
    alembic(Path(demo_project.alembic_ini), staging.get_url(), "upgrade", "head")
    url_before = page.url

    page.locator('article.card[aria-label="staging"]').get_by_role("button", name="Refresh").click()

    expect(badge["staging"]).to_have_text("current", timeout=30_000)  # the worker read it
    expect(page.get_by_test_id("reading")).to_have_count(0)
    assert page.url == url_before
    assert page.evaluate("() => window.__marker") == 1, "the refresh navigated away"
    expect(cards).to_have_count(3)
    expect(badge["prod"]).to_have_text("6 behind")
    expect(badge["dev"]).to_have_text("current")
    page.screenshot(path=artifacts / "overview-after-refresh.png", full_page=True)


def test_the_prod_card_leads_to_its_pending_revisions_in_apply_order(
    page: Page, live_server, demo_project: Project, users, artifacts: Path
) -> None:
    log_in(page, live_server.url, "alice", "pw-alice")

    page.locator('article.card[aria-label="prod"]').get_by_role("link", name="prod").click()

    expect(page).to_have_url(re.compile(r"/projects/inventory/environments/prod/$"))
    expect(page.get_by_role("heading", name="prod", level=1)).to_be_visible()
    pending = page.locator("section").filter(
        has=page.get_by_role("heading", name="Pending, in apply order")
    )
    rows = pending.locator("table tbody tr")
    expect(rows).to_have_count(6)
    expect(rows.first.locator("td").nth(1).locator("code")).to_have_text(inv.ADD_USERS_EMAIL)
    expect(rows.filter(has_text=inv.DROP_COLUMN_REVISION)).to_have_count(1)
    page.screenshot(path=artifacts / "environment-prod.png", full_page=True)


def test_a_wrong_password_is_refused_on_the_login_page(page: Page, live_server, users) -> None:
    log_in(page, live_server.url, "alice", "not-alices-password")

    expect(page.get_by_role("alert")).to_contain_text("did not match")
    expect(page).to_have_url(re.compile(r"/login/"))
    expect(page.get_by_role("heading", name="Log in to Retort")).to_be_visible()
    expect(page.locator("article.card")).to_have_count(0)
