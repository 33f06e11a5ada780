"""A rollout in a real browser, with a real worker: a developer asks for one across twelve
tenants from the rollouts page, reads its plans and asks for approval (one tenant's policy asks
for one); he cannot approve it himself; a release manager approves the whole set of plans once;
the page follows the waves live to the end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from environments.models import Environment, Job, Project, Rollout
from tests.browser import as_user, docs_screenshot
from tests.conftest import add_tenants

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_rollout_is_asked_for_approved_once_and_followed_wave_by_wave_to_the_end(
    browser: Browser,
    live_server,
    inventory,
    make_project,
    demo_templates,
    people,
    start_worker,
    settings,
    tmp_path,
    artifacts: Path,
) -> None:
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
    project: Project = make_project(inventory, {}, name="saas")
    add_tenants(project, demo_templates, tmp_path, range(12))
    Environment.objects.filter(name="t011").update(required_approvals=1)
    base = live_server.url

    # bob, a developer, asks for every tenant to go to head: a canary, then eu, then the rest.
    bob = as_user(browser, base, "bob")
    bob.get_by_role("link", name="Rollouts").click()
    bob.get_by_label("Project").select_option("saas")
    bob.get_by_label("Target", exact=True).fill("heads")
    bob.get_by_label("Waves").fill(
        "canary: count=1 parallel=1\neu: region=eu parallel=2\nrest: parallel=4"
    )
    bob.get_by_label("Back up each target first").select_option("no")
    bob.get_by_label("Why").fill("release 4.3")
    bob.get_by_role("button", name="Plan the rollout").click()

    # a worker reads every tenant and works the plans out; the page follows
    expect(bob.get_by_test_id("rollout-status")).to_have_text("planned", timeout=60_000)
    expect(bob.locator("#plan-1")).to_contain_text("4 targets")
    expect(bob.locator("#plan-1 pre.sql-preview")).to_contain_text("UPDATE alembic_version")
    expect(bob.get_by_test_id("wave-1")).to_contain_text("1. canary")
    expect(bob.locator("#rollout-approval-count")).to_contain_text("0 of 1")
    bob.get_by_role("button", name="Ask for approval").click()
    expect(bob.get_by_test_id("rollout-status")).to_have_text("awaiting_approval")
    expect(bob.locator("#approve-rollout")).to_have_count(0)
    expect(bob.locator("#rollout-why-not")).to_contain_text("someone else must decide")
    rollout = Rollout.objects.get()

    # alice approves the whole set of plans once; the page follows the waves to the end
    alice = as_user(browser, base, "alice")
    alice.get_by_role("link", name="Rollouts").click()
    alice.get_by_role("link", name=f"#{rollout.pk}").click()
    alice.get_by_label("Comment").fill("plans 1 and 2 read")
    alice.get_by_role("button", name="Approve these plans").click()
    expect(alice.get_by_test_id("rollout-status")).to_have_text(re.compile("running|completed"))
    expect(alice.get_by_test_id("rollout-status")).to_have_text("completed", timeout=120_000)
    expect(alice.get_by_test_id("count-done")).to_have_text("12")
    expect(alice.get_by_test_id("count-failed")).to_have_text("0")
    expect(alice.locator("#rollout-note")).to_have_text("12 of 12 hold the target.")
    for number in (1, 2, 3):
        expect(alice.get_by_test_id(f"wave-{number}")).to_contain_text("finished in")
    expect(alice.locator("ul.decisions")).to_contain_text("alice approved")
    docs_screenshot(alice, "rollout", artifacts, full_page=True)

    # every tile links to its target's job, an ordinary one
    alice.get_by_test_id("wave-1").get_by_role("link", name="t001").click()
    expect(alice.get_by_test_id("job-status")).to_have_text("succeeded")
    expect(alice.locator("#job-rollout")).to_contain_text(f"A target of rollout #{rollout.pk}")
    job = Job.objects.get(rollout=rollout, environment__name="t001")
    expect(alice.locator(f"#approval-count-{job.pk}")).to_contain_text(
        "1 of 1 approval of its plans"
    )
    expect(alice.locator("#job-log")).to_contain_text(
        f"A target of rollout #{rollout.pk}, whose plans were approved."
    )
    assert Job.objects.filter(rollout=rollout, status="succeeded").count() == 8
