"""What a job's pages tell a person, in a real browser (issue #16, items 5, 6 and 7): a refused
plan keeps what was typed; a viewer is shown no button the role does not allow; a failed run
leads with its cause, where it stopped, what the database holds now and what to do next."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from environments import drift, planning
from environments.models import Job, Project
from examples.inventory import revisions as inv
from tests.browser import as_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_refused_plan_keeps_the_kind_target_and_reason_that_were_typed(
    browser: Browser, live_server, demo_project: Project, users, artifacts: Path
) -> None:
    bob = as_user(browser, live_server.url, "bob")
    bob.goto(f"{live_server.url}/projects/inventory/environments/staging/")
    bob.get_by_label("Downgrade").check()
    bob.get_by_label("or type a target").fill("no-such-revision")
    bob.get_by_label("Reason").fill("ticket OPS-77 <b>roll back</b>")
    bob.get_by_label("Back up first").uncheck()
    bob.get_by_role("button", name="Plan the job").click()

    expect(bob.locator("#job-error")).to_contain_text("no-such-revision")
    expect(bob.get_by_label("Downgrade")).to_be_checked()
    expect(bob.get_by_label("or type a target")).to_have_value("no-such-revision")
    expect(bob.get_by_label("Reason")).to_have_value("ticket OPS-77 <b>roll back</b>")
    expect(bob.get_by_label("Back up first")).not_to_be_checked()
    assert Job.objects.count() == 0
    bob.screenshot(path=artifacts / "job-form-refused.png", full_page=True)


def test_a_viewer_is_shown_no_button_the_role_does_not_allow(
    browser: Browser, live_server, demo_project: Project, users, artifacts: Path
) -> None:
    job = planning.job_request(
        environment=demo_project.environments.get(slug="dev"),
        kind="downgrade",
        target="-1",
        user=users["bob"],
    )
    vera = as_user(browser, live_server.url, "vera")

    vera.goto(f"{live_server.url}{job.get_absolute_url()}")
    expect(vera.get_by_test_id("job-status")).to_have_text("planned")
    expect(vera.locator("#job-read-only")).to_contain_text("You can follow this job")
    expect(vera.locator("#job-live button")).to_have_count(0)  # no Queue, Discard, Cancel

    vera.goto(f"{live_server.url}/projects/inventory/environments/dev/")
    expect(vera.locator("#read-only-note")).to_be_visible()
    expect(vera.get_by_role("button", name="Plan the job")).to_have_count(0)
    vera.screenshot(path=artifacts / "viewer-environment.png", full_page=True)

    # bob, who asked for it, has the buttons
    bob = as_user(browser, live_server.url, "bob")
    bob.goto(f"{live_server.url}{job.get_absolute_url()}")
    expect(bob.get_by_role("button", name="Queue this job")).to_be_visible()
    expect(bob.get_by_role("button", name="Discard")).to_be_visible()


@pytest.mark.worker
def test_a_failed_upgrade_leads_with_its_cause_and_says_what_the_database_holds_now(
    browser: Browser,
    live_server,
    demo_project: Project,
    users,
    start_worker,
    settings,
    artifacts: Path,
) -> None:
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
    prod = demo_project.environments.get(slug="prod")
    with sqlite3.connect(prod.get_url().removeprefix("sqlite:///")) as db:
        db.execute("CREATE TABLE shipments (id INTEGER PRIMARY KEY)")  # made by hand
    drift.drift_record(project=demo_project)  # the scheduled check finds it
    bob = as_user(browser, live_server.url, "bob")

    bob.goto(f"{live_server.url}/projects/inventory/environments/prod/")
    bob.get_by_label("Upgrade").check()
    bob.get_by_label("Target", exact=True).select_option("heads")
    bob.get_by_role("button", name="Plan the job").click()

    # the plan foretells it
    shipments = bob.locator("#plan-revisions tr", has_text=inv.CREATE_SHIPMENTS)
    expect(shipments.locator(".finding-danger")).to_contain_text(
        "Table shipments already exists on prod, though no migration creates it: the upgrade "
        "will fail at this revision"
    )
    expect(bob.locator("#sql-preview")).to_contain_text("CREATE TABLE shipments", timeout=60_000)
    bob.get_by_role("button", name="Queue this job").click()

    expect(bob.get_by_test_id("job-status")).to_have_text("failed", timeout=90_000)
    failure = bob.locator("#job-failure")
    expect(failure).to_contain_text(
        f"table shipments already exists — in revision {inv.CREATE_SHIPMENTS} (3 of 6)."
    )
    expect(failure).to_contain_text(f"The database holds {inv.DROP_PRODUCTS_LEGACY_FLAG} now")
    expect(failure).to_contain_text(
        re.compile(
            r"Next: fix the revision and plan the job again, "
            r"restore backup #\d+ taken before the run"
        )
    )
    expect(bob.locator("#job-progress")).to_have_text("stopped in revision 3 of 6")
    expect(failure).not_to_contain_text("Traceback")
    # the cause comes first: above the plan, the SQL and the log
    cause_at = failure.bounding_box()["y"]
    for later in ("#plan-revisions", "#sql-preview", "#job-log"):
        assert cause_at < bob.locator(later).bounding_box()["y"], later
    bob.screenshot(path=artifacts / "job-failed.png", full_page=True)
