"""A job in a real browser (issue #5): request a staging upgrade, read the plan and its SQL,
queue it, watch the log stream to success, and see staging's badge turn current."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from environments.models import Job, Project
from examples.inventory import revisions as inv
from tests.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_developer_upgrades_staging_and_watches_it_to_success(
    page: Page, live_server, demo_project: Project, users, start_worker, settings, artifacts: Path
) -> None:
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
    log_in(page, live_server.url, "bob", "pw-bob")
    staging = page.locator('article.card[aria-label="staging"]')
    expect(staging.get_by_test_id("badge")).to_have_text("3 behind")

    staging.get_by_role("link", name="staging").click()
    page.get_by_label("Upgrade").check()
    page.get_by_label("Target", exact=True).select_option("heads")
    page.get_by_label("Reason").fill("release 4.2")
    page.get_by_role("button", name="Plan the job").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("upgrade staging to heads")
    expect(page.locator("#plan-revisions tbody tr")).to_have_count(3)
    expect(page.locator("#sql-preview")).to_contain_text(
        f"UPDATE alembic_version SET version_num='{inv.HEAD}'", timeout=30_000
    )
    page.screenshot(path=artifacts / "job-plan.png", full_page=True)

    page.get_by_role("button", name="Queue this job").click()
    page.wait_for_load_state()
    page.evaluate("() => { window.__stayed = 1; }")

    expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=60_000)
    assert page.evaluate("() => window.__stayed") == 1, "the page reloaded instead of polling"
    expect(page.locator("#job-progress")).to_have_text("revision 3 of 3")
    expect(page.locator("#job-log")).to_contain_text("Running upgrade")
    expect(page.locator("#job-log")).to_contain_text("Backup #")
    expect(page.locator("#job-backup")).to_contain_text("sqlite")
    page.screenshot(path=artifacts / "job-succeeded.png", full_page=True)
    job = Job.objects.get()
    assert job.requested_by.username == "bob" and job.reason == "release 4.2"
    seen_running = job.log_lines.filter(text__contains="Running upgrade").count()
    assert seen_running == 3

    page.get_by_role("link", name="Overview").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(staging.get_by_test_id("badge")).to_have_text("current")
