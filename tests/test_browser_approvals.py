"""Four eyes on prod in a real browser (issue #6): a developer asks for a prod upgrade and
cannot approve it himself; two release managers approve it from the approvals page; a real
worker runs it to success; the audit page tells the whole story in order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from environments.models import Job, Project
from examples.inventory import revisions as inv
from tests.browser import as_user, docs_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def approve_first_request(page: Page, comment: str) -> None:
    page.get_by_role("link", name=re.compile(r"^Approvals")).click()
    request = page.get_by_test_id("approval-request").first
    expect(request.locator("pre.sql-preview")).to_contain_text("UPDATE alembic_version")
    expect(request.locator(".verdict")).to_contain_text("staging holds")
    request.get_by_label("Comment").fill(comment)
    request.get_by_role("button", name=re.compile(r"^Approve plan")).click()
    page.wait_for_load_state()


def test_two_release_managers_approve_a_developers_prod_upgrade_and_the_trail_tells_it(
    browser: Browser,
    live_server,
    policed: Project,
    people,
    start_worker,
    settings,
    artifacts: Path,
) -> None:
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
    base = live_server.url

    # bob, a developer, asks for prod to move to what staging holds.
    bob = as_user(browser, base, "bob")
    bob.locator('article.card[aria-label="prod"]').get_by_role("link", name="prod").click()
    expect(bob.locator("#policy")).to_contain_text("Jobs need 2 approvals")
    bob.get_by_label("Upgrade").check()
    bob.get_by_label("Target", exact=True).select_option(inv.STAGING_TARGET)
    bob.get_by_label("Reason").fill("release 4.2")
    bob.get_by_role("button", name="Plan the job").click()
    expect(bob.locator("#sql-preview")).to_contain_text("UPDATE alembic_version", timeout=30_000)
    bob.get_by_role("button", name="Ask for approval").click()
    expect(bob.get_by_test_id("job-status")).to_have_text("awaiting_approval")
    expect(bob.locator("#live-approvals")).to_have_text("0 of 2")
    job = Job.objects.get()

    # He cannot approve it: no button, and a hand-made POST is refused in words.
    expect(bob.locator(f"#approve-{job.pk}")).to_have_count(0)
    expect(bob.locator(f"#why-not-{job.pk}")).to_contain_text("someone else must approve it")
    token = bob.evaluate(
        "() => JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']"
    )
    crafted = bob.request.post(
        f"{base}/projects/inventory/environments/prod/jobs/{job.pk}/approve",
        form={"plan_sha256": job.plan_sha256, "csrfmiddlewaretoken": token},
    )
    assert crafted.status == 403 and "someone else must approve it" in crafted.text()
    bob.screenshot(path=artifacts / "approval-requested.png", full_page=True)

    # alice approves from the approvals page.
    alice = as_user(browser, base, "alice")
    expect(alice.get_by_test_id("approvals-count")).to_have_text("1")
    approve_first_request(alice, "SQL read, staging has it")
    expect(alice.locator(f"#approval-count-{job.pk}")).to_contain_text("1 of 2")
    docs_screenshot(alice, "approvals", artifacts, full_page=True)

    # carol gives the second approval; the job is queued and a worker runs it.
    carol = as_user(browser, base, "carol")
    approve_first_request(carol, "ok")
    expect(carol.locator("#no-requests")).to_be_visible()
    carol.locator("#recent-decisions").get_by_role("link", name=f"#{job.pk}").first.click()
    expect(carol.get_by_test_id("job-status")).to_have_text("succeeded", timeout=90_000)
    expect(carol.locator("#job-backup")).to_contain_text("sqlite")
    expect(carol.locator(f"#approval-count-{job.pk}")).to_contain_text("2 of 2")
    carol.screenshot(path=artifacts / "approval-job-succeeded.png", full_page=True)

    # The audit page tells the story, in order.
    alice.get_by_role("link", name="Audit").click()
    alice.get_by_label("Environment").select_option(label="inventory / prod")
    expect(alice).to_have_url(re.compile(r"environment=\d+"))
    rows = alice.locator("#audit-table tbody tr[data-seq]")
    expect(rows.first).to_contain_text("job_succeeded")
    story = []
    for row in reversed(rows.all()):
        cells = row.locator("td").all_inner_texts()
        if f"job {job.pk}" in cells[5]:
            story.append((cells[3], cells[2].replace("system", "").strip()))
    assert story == [
        ("job_planned", "bob"),
        ("approval_requested", "bob"),
        ("approval_refused", "bob"),
        ("job_approved", "alice"),
        ("job_approved", "carol"),
        ("job_queued", "carol"),
        ("job_started", "worker"),
        ("revision_changed", "reader"),  # Retort's own read afterwards, explained by the job
        ("job_succeeded", "worker"),
    ]
    alice.screenshot(path=artifacts / "approval-audit-story.png", full_page=True)
