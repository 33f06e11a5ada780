"""Pages that stay true without a reload (issue #16, items 1 and 2), in a real browser: a
requester's job page and an approver's approvals list follow each other's decisions and the
worker's run; the plan is offered for approval only with its SQL, under one SHA-256."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from environments.models import Approval, Job, Project
from examples.inventory import revisions as inv
from tests.browser import as_user

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def mark_page(page: Page) -> None:
    """A mark that a reload would wipe out: the page must still hold it at the end."""
    page.evaluate("() => { window.__stayed = 1; }")


def still_the_same_page(page: Page) -> bool:
    return page.evaluate("() => window.__stayed") == 1


def test_the_job_page_and_the_approvals_list_follow_approval_and_run_without_a_reload(
    browser: Browser, live_server, policed: Project, people, start_worker, settings, artifacts: Path
) -> None:
    # The worker starts later: until then the SQL is not rendered.
    queue = settings.CELERY_TASK_DEFAULT_QUEUE = f"retort-test-{uuid.uuid4().hex[:8]}"
    base = live_server.url

    # alice watches the approvals list: nothing waits yet.
    alice = as_user(browser, base, "alice")
    alice.get_by_role("link", name="Approvals").click()
    expect(alice.locator("#no-requests")).to_be_visible()
    mark_page(alice)

    # bob plans a staging upgrade (staging needs one approval from a release manager).
    bob = as_user(browser, base, "bob")
    bob.goto(f"{base}/projects/inventory/environments/staging/")
    bob.get_by_label("Upgrade").check()
    bob.get_by_label("Target", exact=True).select_option("heads")
    bob.get_by_label("Reason").fill("release 4.3")
    bob.get_by_role("button", name="Plan the job").click()
    mark_page(bob)

    # No SQL yet: no SHA is shown, and approval cannot be asked for.
    expect(bob.locator("#plan-sha-line")).to_contain_text("Rendering the SQL for staging")
    expect(bob.locator("#plan-sha")).to_have_count(0)
    expect(bob.get_by_role("button", name="Ask for approval")).to_have_count(0)
    expect(bob.locator("#ask-later")).to_be_visible()
    bob.screenshot(path=artifacts / "live-rendering-sql.png", full_page=True)

    start_worker(queue=queue)
    expect(bob.locator("#sql-preview")).to_contain_text(
        f"UPDATE alembic_version SET version_num='{inv.HEAD}'", timeout=60_000
    )
    shown_sha = bob.locator("#plan-sha").inner_text()
    assert len(shown_sha) == 64
    assert still_the_same_page(bob)

    bob.get_by_role("button", name="Ask for approval").click()
    expect(bob.get_by_test_id("job-status")).to_have_text("awaiting_approval")
    expect(bob.locator("#live-approvals")).to_have_text("0 of 1")
    expect(bob.locator("#plan-sha")).to_have_text(shown_sha)  # one plan, one SHA
    expect(bob.get_by_role("button", name="Cancel the request")).to_be_visible()
    mark_page(bob)

    # alice's list and nav show the request without her reloading.
    request = alice.get_by_test_id("approval-request")
    expect(request).to_have_count(1, timeout=15_000)
    expect(alice.get_by_test_id("approvals-count")).to_have_text("1", timeout=20_000)
    assert still_the_same_page(alice)
    approve = request.get_by_role("button", name="Approve plan")
    expect(approve).to_contain_text(shown_sha[:10])
    alice.screenshot(path=artifacts / "live-approvals-list.png", full_page=True)
    approve.click()
    expect(alice.locator("#no-requests")).to_be_visible()

    # bob's page follows: approved, queued, run; nothing left to cancel; the nav count gone.
    expect(bob.get_by_test_id("job-status")).to_have_text("succeeded", timeout=90_000)
    expect(bob.locator("#approval-count-" + str(Job.objects.get().pk))).to_contain_text("1 of 1")
    expect(bob.locator("#live-approvals")).to_have_count(0)
    expect(bob.get_by_role("button", name="Cancel the request")).to_have_count(0)
    expect(bob.get_by_text("You can cancel")).to_have_count(0)
    expect(bob.locator("#job-progress")).to_have_text("revision 3 of 3")
    expect(bob.get_by_test_id("approvals-count")).to_have_count(0)
    expect(bob.locator("#nav-approvals")).to_have_text("Approvals")
    assert still_the_same_page(bob)
    bob.screenshot(path=artifacts / "live-job-succeeded.png", full_page=True)

    job = Job.objects.get()
    assert job.plan_sha256 == shown_sha
    assert list(Approval.objects.values_list("plan_sha256", flat=True)) == [shown_sha]
