"""The drift page in a real browser (issue #7): a developer sees prod's missing revisions and
an index someone added to prod by hand, found once a real worker has built the schema prod's
migrations give."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from environments.models import Project
from examples.inventory import revisions as inv
from tests.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_the_drift_page_shows_prods_missing_revisions_and_a_hand_added_index(
    page: Page, live_server, demo_project: Project, users, start_worker, settings, artifacts: Path
) -> None:
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
    prod = demo_project.environments.get(slug="prod").get_url().removeprefix("sqlite:///")
    with sqlite3.connect(prod) as db:
        db.execute("CREATE INDEX ix_orders_by_hand ON orders (product_id, qty)")
    log_in(page, live_server.url, "bob", "pw-bob")

    page.get_by_role("link", name="drift").click()
    expect(page).to_have_url(re.compile(r"/projects/inventory/drift$"))

    revisions = page.get_by_test_id("drift-revisions")
    expect(revisions).to_contain_text(
        "prod lacks these 3 revisions that staging has: "
        f"{inv.ADD_USERS_EMAIL}, {inv.DROP_PRODUCTS_LEGACY_FLAG}, {inv.CREATE_SHIPMENTS}"
    )
    expected = page.get_by_test_id("drift-expected")
    expect(expected).to_contain_text(
        "prod has index ix_orders_by_hand on orders (product_id, qty) that no migration creates",
        timeout=60_000,
    )
    expect(expected.locator("li")).to_have_count(1)  # dev and staging are as built
    expect(page.locator("#expected-pending")).to_have_count(0)
    row = page.locator(f'#drift-matrix tr[data-revision="{inv.ADD_USERS_EMAIL}"] td')
    expect(row).to_have_text(
        [re.compile(inv.ADD_USERS_EMAIL), re.compile("users.email"), "✔", "✔", "—"]
    )
    page.screenshot(path=artifacts / "drift.png", full_page=True)
