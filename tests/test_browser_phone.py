"""Retort on a phone (issue #16, item 3), in a real browser 390 px wide: the header, the
revision graph, a job page and the audit trail are readable and nothing scrolls sideways."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from environments import planning
from environments.models import Project
from tests.browser import as_user, docs_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = 390


def sideways(page: Page) -> int:
    """How many pixels the page is wider than the screen (0: nothing scrolls sideways)."""
    return page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")


def box(page: Page, selector: str) -> dict:
    found = page.locator(selector).first.bounding_box()
    assert found is not None, f"{selector} is not shown"
    return found


def assert_within_the_screen(page: Page, selector: str) -> None:
    for element in page.locator(selector).all():
        shape = element.bounding_box()
        if shape is not None:
            assert shape["x"] >= 0 and shape["x"] + shape["width"] <= PHONE + 0.5, (
                f"{selector} reaches past the screen: {shape}"
            )


def test_at_390_px_the_header_graph_job_and_audit_pages_fit_the_screen(
    browser: Browser, live_server, demo_project: Project, users, artifacts: Path
) -> None:
    # a planned prod upgrade with its SQL rendered (a real `alembic --sql`), for the job page
    job = planning.job_request(
        environment=demo_project.environments.get(slug="prod"),
        kind="upgrade",
        target="heads",
        user=users["alice"],
        reason="release 4.2",
        sql=True,
    )
    planning.job_preview_sql(job_id=job.pk)
    page = as_user(browser, live_server.url, "alice", width=PHONE)

    # The overview and its header: every link on the dark bar, Log out readable.
    assert sideways(page) == 0
    assert_within_the_screen(page, ".topbar a, .topbar button")
    logout = page.get_by_role("button", name="Log out")
    bar = box(page, ".topbar")
    out = logout.bounding_box()
    assert out is not None and out["y"] + out["height"] <= bar["y"] + bar["height"]
    assert_within_the_screen(page, "article.card")
    docs_screenshot(page, "phone", artifacts)

    # The graph: a box as wide as the screen allows, the drawing scrolling inside it.
    page.goto(f"{live_server.url}/projects/inventory/graph?env=prod")
    graph = box(page, ".graph-scroll")
    assert graph["width"] >= PHONE - 40, f"the graph's box is {graph['width']} px wide"
    drawing = box(page, "svg.revision-graph")
    assert drawing["height"] > 200
    expect(page.locator("svg.revision-graph g.node").first).to_be_visible()
    assert sideways(page) == 0
    page.screenshot(path=artifacts / "phone-graph.png", full_page=True)

    # The job page: plan, SQL and actions within the screen.
    page.goto(f"{live_server.url}{job.get_absolute_url()}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("upgrade prod")
    expect(page.locator("#sql-preview")).to_be_visible()
    assert sideways(page) == 0
    assert_within_the_screen(page, "#plan-revisions tr, #sql-preview, #plan-sha, .job-actions")
    page.screenshot(path=artifacts / "phone-job.png", full_page=True)

    # The audit trail: each event a stacked block, its cells labelled.
    page.get_by_role("link", name="Audit", exact=True).click()
    rows = page.locator("#audit-table tbody tr[data-seq]")
    expect(rows.first).to_be_visible()
    assert sideways(page) == 0
    assert_within_the_screen(page, "#audit-table tbody tr[data-seq]")
    first = rows.first
    assert (
        first.locator('td[data-label="Action"]').evaluate(
            "td => getComputedStyle(td, '::before').content"
        )
        == '"Action "'
    )
    expect(first.locator('td[data-label="Action"]')).to_contain_text("login")  # newest first
    expect(rows.locator('td[data-label="Action"]', has_text="job_planned")).to_have_count(1)
    page.screenshot(path=artifacts / "phone-audit.png", full_page=True)
