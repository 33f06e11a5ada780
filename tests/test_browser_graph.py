"""The revision graph in a real browser: Playwright drives Debian's Chromium against a live server.

Issue #3: log in, open the inventory project's graph from the overview, pick prod, see what is
pending, open the drop-column revision and read its warning — all without leaving the page.
Also: three concurrent heads each in a lane of its own, and Find.

The `browser` and `page` fixtures come from tests/browser.py (module-scoped Chromium, with
DJANGO_ALLOW_ASYNC_UNSAFE set only while Playwright runs).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from environments.models import Project
from examples.inventory import revisions as inv
from tests.browser import docs_screenshot, log_in
from tests.conftest import alembic, read_all, three_heads_history

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WHITE = "rgb(255, 255, 255)"

# three_heads_history() writes revision files only; alembic needs an env.py to run them.
MINIMAL_ENV_PY = """\
import os

from alembic import context
from sqlalchemy import create_engine, pool

engine = create_engine(os.environ["DATABASE_URL"], poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
"""


def circle_styles(nodes: Locator) -> list[dict[str, str]]:
    """The revision id and the computed fill and stroke of each node's circle."""
    return nodes.evaluate_all(
        """gs => gs.map(g => {
            const style = getComputedStyle(g.querySelector("circle"));
            return {revision: g.dataset.revision, fill: style.fill, stroke: style.stroke};
        })"""
    )


def node_positions(page: Page) -> dict[str, tuple[float, float]]:
    """Each drawn revision's circle centre (cx, cy), by revision id."""
    pairs = page.locator("svg.revision-graph g.node[data-revision]").evaluate_all(
        """gs => gs.map(g => {
            const c = g.querySelector("circle");
            return [g.dataset.revision, +c.getAttribute("cx"), +c.getAttribute("cy")];
        })"""
    )
    return {revision: (cx, cy) for revision, cx, cy in pairs}


def test_a_release_manager_picks_prod_and_reads_the_drop_column_warning_in_place(
    page: Page, live_server, demo_project: Project, users, artifacts: Path
) -> None:
    log_in(page, live_server.url, "alice", "pw-alice")
    expect(page.get_by_role("heading", name="Migration state")).to_be_visible()

    page.locator("#project-inventory").get_by_role("link", name="graph", exact=True).click()

    expect(page).to_have_url(re.compile(r"/projects/inventory/graph$"))
    expect(page.get_by_role("heading", name="Revision graph")).to_be_visible()

    page.locator('a.pick[data-environment="prod"]').click()

    expect(page).to_have_url(re.compile(r"/projects/inventory/graph\?env=prod$"))
    expect(page.locator('a.pick[data-environment="prod"]')).to_have_class(re.compile(r"\bactive\b"))
    pending = page.locator("g.node[data-state=pending]")
    applied = page.locator("g.node[data-state=applied]")
    expect(pending).to_have_count(6)
    expect(applied).to_have_count(8)
    expect(page.locator("g.node[data-state=plain]")).to_have_count(0)

    pending_styles = circle_styles(pending)
    assert {s["revision"] for s in pending_styles} == set(inv.ALL_REVISIONS[-6:])
    for style in pending_styles:
        assert style["fill"] == WHITE, f"pending {style['revision']} is not hollow: {style}"
        assert style["stroke"] != WHITE, f"pending {style['revision']} has no ring: {style}"
    applied_styles = circle_styles(applied)
    assert {s["revision"] for s in applied_styles} == set(inv.ALL_REVISIONS[:8])
    for style in applied_styles:
        assert style["fill"] != WHITE, f"applied {style['revision']} is hollow: {style}"
        assert style["fill"] == style["stroke"], f"applied {style['revision']}: {style}"

    prod_markers = page.locator('g.marker[data-environment="prod"]')
    expect(prod_markers).to_have_count(1)
    prod_marker = page.locator(f'#rev-{inv.PROD_TARGET} g.marker[data-environment="prod"]')
    expect(prod_marker).to_be_visible()
    expect(prod_marker).to_have_class(re.compile(r"\bcurrent-env\b"))

    url_before = page.url
    page.evaluate("() => { window.__graphPageMarker = 1; }")

    page.locator(f"#rev-{inv.DROP_COLUMN_REVISION}").click()

    panel = page.locator("aside#panel article.revision-panel")
    expect(panel).to_have_attribute("data-revision", inv.DROP_COLUMN_REVISION)
    expect(panel.locator("p.finding.danger")).to_contain_text("drops column products.legacy_flag")
    expect(panel.locator("p.finding.danger")).to_contain_text("Destructive (upgrade, line")
    expect(panel.locator('h3:text-is("upgrade()") + .source')).to_contain_text("drop_column")
    expect(panel.locator('dt:text-is("Pending in") + dd')).to_have_text("prod")
    expect(panel.locator('dt:text-is("Applied in") + dd')).to_have_text("dev, staging")
    assert page.url == url_before, "loading the panel changed the URL"
    assert page.evaluate("() => window.__graphPageMarker") == 1, "loading the panel navigated"
    docs_screenshot(page, "graph", artifacts, full_page=True)


def test_three_heads_and_a_merge_of_merges_are_drawn_in_lanes_of_their_own(
    page: Page, live_server, make_project, users, artifacts: Path, tmp_path: Path
) -> None:
    ini = three_heads_history(tmp_path)
    (ini.parent / "migrations" / "env.py").write_text(MINIMAL_ENV_PY, encoding="utf-8")
    dev_url = f"sqlite:///{tmp_path / 'tri-dev.sqlite'}"
    alembic(ini, dev_url, "upgrade", "h10000000000")
    read_all(make_project(ini, {"dev": dev_url}, name="tri"))
    log_in(page, live_server.url, "alice", "pw-alice")
    expect(page.get_by_role("heading", name="Migration state")).to_be_visible()

    page.goto(live_server.url + "/projects/tri/graph?env=dev")

    expect(page.locator("svg.revision-graph g.node[data-revision]")).to_have_count(11)
    heads = ("h10000000000", "h20000000000", "h30000000000")
    positions = node_positions(page)
    assert len({positions[head][0] for head in heads}) == 3, f"heads share a lane: {positions}"
    top_three = sorted(positions, key=lambda revision: positions[revision][1])[:3]
    assert set(top_three) == set(heads), f"the heads are not the top rows: {positions}"
    expect(page.locator("path.edge-depends_on")).to_have_count(2)
    merge_of_merges = page.locator('path[data-child="f10000000000"]')
    expect(merge_of_merges).to_have_count(2)
    parents = {merge_of_merges.nth(i).get_attribute("data-parent") for i in range(2)}
    assert parents == {"e10000000000", "d10000000000"}
    expect(page.locator("g.branch-label")).to_have_text("middle")
    expect(page.locator('#rev-h10000000000 g.marker[data-environment="dev"]')).to_be_visible()
    expect(page.locator("g.node[data-state=pending]")).to_have_count(2)
    docs_screenshot(page.locator(".graph-scroll"), "three-heads", artifacts)


def test_find_highlights_the_drop_column_revision_and_scrolls_it_into_view(
    page: Page, live_server, demo_project: Project, users
) -> None:
    # Short enough that the drop-column revision starts below the fold.
    page.set_viewport_size({"width": 1280, "height": 300})
    log_in(page, live_server.url, "alice", "pw-alice")
    expect(page.get_by_role("heading", name="Migration state")).to_be_visible()
    page.goto(live_server.url + "/projects/inventory/graph")
    node = page.locator(f"#rev-{inv.DROP_COLUMN_REVISION}")
    expect(node).to_be_attached()
    expect(node).not_to_be_in_viewport()
    expect(page.locator("g.node.highlighted")).to_have_count(0)

    page.get_by_label("Find").fill("legacy")
    page.get_by_role("button", name="Find").click()

    expect(page).to_have_url(re.compile(r"[?&]q=legacy\b"))
    expect(page.locator("p.search-result")).to_contain_text("1 match for “legacy”")
    expect(node).to_have_class(re.compile(r"\bhighlighted\b"))
    expect(page.locator("g.node.highlighted")).to_have_count(1)
    expect(node).to_be_in_viewport()


def test_a_keyboard_user_opens_a_revision_with_enter(
    page: Page, live_server, demo_project: Project, users
) -> None:
    log_in(page, live_server.url, "alice", "pw-alice")
    page.goto(live_server.url + "/projects/inventory/graph?env=prod")

    page.locator(f"#rev-{inv.DROP_COLUMN_REVISION}").focus()
    page.keyboard.press("Enter")

    expect(page.locator("#panel article.revision-panel")).to_have_attribute(
        "data-revision", inv.DROP_COLUMN_REVISION
    )
