"""The drift page in a real browser (issues #7 and #16): a developer asks for a check, sees it
under way (never "No drift" while it runs), then prod's missing revisions and an index someone
added to prod by hand, found once a real worker has built the schema prod's migrations give;
the overview's badge then says the same."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from environments.models import Project
from examples.inventory import revisions as inv
from tests.browser import docs_screenshot, log_in

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_the_drift_page_shows_prods_missing_revisions_and_a_hand_added_index(
    page: Page, live_server, demo_project: Project, users, start_worker, settings, artifacts: Path
) -> None:
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
    prod = demo_project.environments.get(slug="prod").get_url().removeprefix("sqlite:///")
    with sqlite3.connect(prod) as db:
        db.execute("CREATE INDEX ix_orders_by_hand ON orders (product_id, qty)")
    log_in(page, live_server.url, "bob", "pw-bob")

    expect(page.get_by_test_id("drift-badge")).to_have_count(0)  # never checked
    page.get_by_role("link", name="drift").click()
    expect(page).to_have_url(re.compile(r"/projects/inventory/drift$"))
    expect(page.locator("#drift-never-checked")).to_contain_text("not been checked")
    expect(page.locator("#no-drift")).to_have_count(0)

    page.get_by_role("button", name="Check now").click()
    checking = page.locator("#drift-checking")
    expect(checking).to_contain_text("Checking inventory now (bob asked")
    expect(page.locator("#no-drift")).to_have_count(0)  # not while a check runs
    page.screenshot(path=artifacts / "drift-checking.png", full_page=True)

    expected = page.get_by_test_id("drift-expected")
    expect(expected).to_contain_text(
        "prod has index ix_orders_by_hand on orders (product_id, qty) that no migration creates",
        timeout=60_000,
    )
    expect(checking).to_have_count(0)
    expect(page.locator("#drift-checked-at")).to_contain_text("Last checked")
    expect(page.locator("#no-drift")).to_have_count(0)
    expect(expected.locator("li")).to_have_count(1)  # dev and staging are as built
    revisions = page.get_by_test_id("drift-revisions")
    expect(revisions).to_contain_text(
        "prod lacks these 3 revisions that staging has: "
        f"{inv.ADD_USERS_EMAIL}, {inv.DROP_PRODUCTS_LEGACY_FLAG}, {inv.CREATE_SHIPMENTS}"
    )
    row = page.locator(f'#drift-matrix tr[data-revision="{inv.ADD_USERS_EMAIL}"] td')
    expect(row).to_have_text(
        [re.compile(inv.ADD_USERS_EMAIL), re.compile("users.email"), "✔", "✔", "—"]
    )
    docs_screenshot(page, "drift", artifacts, full_page=True)

    # The overview's badges show the same check: prod's one finding, nothing for the others.
    page.get_by_role("link", name="Overview").click()
    badges = page.get_by_test_id("drift-badge")
    expect(badges).to_have_count(1)
    prod_card = page.locator('article.card[aria-label="prod"]')
    expect(prod_card.get_by_test_id("drift-badge")).to_have_text("drift: 1 finding")
