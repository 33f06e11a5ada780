"""The audit page in a real browser (issue #4): an auditor filters the trail by environment
and action, downloads the CSV, and finds in it exactly the rows the page showed."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from environments import reads
from environments.models import Project
from tests.browser import log_in
from tests.conftest import alembic

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _hand_run_upgrade(project: Project, env_slug: str) -> None:
    """Someone runs `alembic upgrade +1` from a shell; Retort's next read notices."""
    environment = project.environments.get(slug=env_slug)
    alembic(Path(project.alembic_ini), environment.get_url(), "upgrade", "+1")
    reads.environment_read(environment=environment)


def test_an_auditor_filters_the_trail_and_the_csv_matches_the_page(
    page: Page, live_server, demo_project: Project, users, artifacts: Path
) -> None:
    reads.environments_read(environments=list(demo_project.environments.all()))
    _hand_run_upgrade(demo_project, "staging")
    _hand_run_upgrade(demo_project, "prod")
    _hand_run_upgrade(demo_project, "staging")
    log_in(page, live_server.url, "vera", "pw-vera")

    page.get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()
    expect(page.locator("#chain-status")).to_contain_text("Chain verified through event")
    everything = page.locator("#audit-table tbody tr[data-seq]").count()

    page.get_by_label("Environment").select_option(label="inventory / staging")
    expect(page).to_have_url(re.compile(r"environment=\d+"))
    page.get_by_label("Action").select_option("out_of_band_change")
    expect(page.locator("#audit-count")).to_have_text("2 events")
    expect(page).to_have_url(re.compile(r"action=out_of_band_change"))

    rows = page.locator("#audit-table tbody tr[data-seq]")
    expect(rows).to_have_count(2)
    assert everything > 2
    shown = [
        (row.get_attribute("data-seq"), *row.locator("td").all_inner_texts()[3:6])
        for row in rows.all()
    ]
    assert {(action, project, env) for _, action, project, env in shown} == {
        ("out_of_band_change", "inventory", "staging")
    }
    page.screenshot(path=artifacts / "audit-filtered.png", full_page=True)

    with page.expect_download() as download_info:
        page.locator("#export-csv").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    saved = artifacts / "audit-filtered.csv"
    download.save_as(saved)
    with saved.open(newline="") as handle:
        exported = [
            (row["seq"], row["action"], row["project_slug"], row["environment_slug"])
            for row in csv.DictReader(handle)
        ]

    assert exported == [(seq, action, "inventory", env) for seq, action, _, env in shown]

    page.get_by_role("link", name="staging").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("staging")
    expect(page).to_have_url(re.compile(r"/environments/staging/$"))
