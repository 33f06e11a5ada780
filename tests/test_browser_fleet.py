"""Three hundred environments on one screen (generated SQLite files, read as the workers
would): the counts at the top, what needs attention first, a table a page at a time, and
filters by label and by status, in a real browser."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser import as_user, docs_screenshot
from tests.conftest import add_tenants

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FLEET = 300
MISSING = {7, 8, 150, 299}  # files that do not exist: unreachable


@pytest.fixture
def fleet(inventory, make_project, demo_templates, tmp_path):
    """300 tenants: a third at head, a third 3 behind, a third 6 behind, four unreachable."""
    project = make_project(inventory, {}, name="fleet")
    add_tenants(project, demo_templates, tmp_path, range(FLEET), missing=MISSING)
    return project


def _counts(page: Page) -> list[str]:
    return [text.strip() for text in page.get_by_test_id("counts").locator("a").all_inner_texts()]


def test_three_hundred_environments_are_counted_triaged_paged_and_filtered(
    browser, live_server, users, fleet, artifacts: Path
):
    page = as_user(browser, live_server.url, "alice")

    assert _counts(page) == ["99 current", "197 behind", "4 unreachable"]
    attention = page.get_by_test_id("attention-row")
    expect(attention).to_have_count(50)
    for row in range(4):  # the databases that cannot be read come first
        expect(attention.nth(row)).to_contain_text("unreachable")
    expect(page.locator("#needs-attention summary")).to_contain_text("201 environments")
    expect(page.get_by_test_id("pages")).to_contain_text("Page 1 of 3")
    expect(page.get_by_test_id("environment-row")).to_have_count(100)
    docs_screenshot(page, "fleet", artifacts, full_page=False)

    page.locator("#page-next").click()
    expect(page.get_by_test_id("pages")).to_contain_text("Page 2 of 3")
    expect(page.get_by_test_id("environment-row").first).to_have_attribute(
        "data-environment", "t100"
    )

    page.get_by_label("Labels").fill("tier:prod")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#fleet-shown")).to_have_text("showing 100 of 300")
    expect(page.get_by_test_id("environment-row")).to_have_count(100)
    expect(page.get_by_test_id("pages")).to_have_count(0)
    assert _counts(page) == ["99 current", "197 behind", "4 unreachable"]  # always the fleet's

    page.get_by_label("Labels").fill("")
    page.get_by_label("Status").select_option("unreachable")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#fleet-shown")).to_have_text("showing 4 of 300")
    expect(page.locator("article.card")).to_have_count(4)  # few enough for cards

    page.get_by_label("Status").select_option("")
    page.get_by_label("Group by label").fill("region")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_test_id("group").first).to_have_text("region=eu")
    page.screenshot(path=artifacts / "fleet-grouped-by-region.png", full_page=True)
