"""The revision graph in a real browser (issue #3): pick prod, see what is pending, open the
drop-column revision and read its warning."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from environments.models import Project
from examples.inventory import revisions as inv
from tests.browser import log_in
from tests.conftest import three_heads_history

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_release_manager_picks_prod_and_reads_the_drop_column_warning(
    page: Page, live_server, demo_project: Project, users, artifacts: Path
) -> None:
    log_in(page, live_server.url, "alice", "pw-alice")
    page.locator("#project-inventory").get_by_role("link", name="graph").click()
    expect(page.get_by_role("heading", name="Revision graph")).to_be_visible()

    page.locator('a.pick[data-environment="prod"]').click()

    pending = page.locator("g.node[data-state=pending]")
    expect(pending).to_have_count(6)
    expect(page.locator("g.node[data-state=applied]")).to_have_count(8)
    fills = pending.locator("circle").evaluate_all("cs => cs.map(c => getComputedStyle(c).fill)")
    assert set(fills) == {"rgb(255, 255, 255)"}, "pending revisions are drawn hollow"
    marker = page.locator(f'#rev-{inv.PROD_TARGET} .marker[data-environment="prod"]')
    expect(marker).to_be_visible()
    url_before = page.url

    page.locator(f"#rev-{inv.DROP_COLUMN_REVISION}").click()

    panel = page.locator("#panel article.revision-panel")
    expect(panel).to_have_attribute("data-revision", inv.DROP_COLUMN_REVISION)
    expect(panel.locator("p.finding.danger")).to_contain_text("drops column products.legacy_flag")
    expect(panel.locator(".source").first).to_contain_text("drop_column")
    expect(panel).to_contain_text("prod")
    assert page.url == url_before, "the panel loads in place"
    page.screenshot(path=artifacts / "graph-prod.png", full_page=True)


def test_three_heads_and_a_merge_of_merges_are_drawn_in_their_own_lanes(
    page: Page, live_server, make_project, users, artifacts: Path, tmp_path: Path
) -> None:
    ini = three_heads_history(tmp_path)
    make_project(ini, {"dev": f"sqlite:///{tmp_path / 'never-created.sqlite'}"}, name="tri")
    log_in(page, live_server.url, "alice", "pw-alice")

    page.goto(live_server.url + "/projects/tri/graph")

    heads = [page.locator(f"#rev-h{n}0000000000 circle") for n in (1, 2, 3)]
    lanes = {head.get_attribute("cx") for head in heads}
    assert len(lanes) == 3, "three concurrent heads, three lanes"
    expect(page.locator("path.edge-depends_on")).to_have_count(2)
    expect(page.locator('path.edge-parent[data-child="f10000000000"]')).to_have_count(2)
    expect(page.locator("g.branch-label")).to_contain_text("middle")
    page.locator("svg.revision-graph").screenshot(path=artifacts / "graph-three-heads.png")


def test_find_highlights_a_revision_by_the_words_of_its_message(
    page: Page, live_server, demo_project: Project, users
) -> None:
    log_in(page, live_server.url, "alice", "pw-alice")
    page.goto(live_server.url + "/projects/inventory/graph")

    page.get_by_label("Find").fill("legacy")
    page.get_by_role("button", name="Find").click()

    node = page.locator(f"#rev-{inv.DROP_COLUMN_REVISION}")
    expect(node).to_have_class("node plain flagged highlighted")
    expect(node).to_be_in_viewport()
