"""A release manager's journey with a rehearsal, in a real browser with a real worker: a
developer plans prod's upgrade and rehearses it on a copy, asks for approval; the approver
reads how the rehearsal went beside the plan, approves, the upgrade runs, and its result is
proven against the schema its revisions build."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psycopg2
import pytest
from playwright.sync_api import Browser, expect

from tests.browser import as_user, docs_screenshot
from tests.conftest import at_r1
from tests.conftest import orders_prod as prod

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_plan_rehearse_on_a_copy_then_approve_for_prod(
    browser: Browser, live_server, orders_project, users, start_worker, settings, artifacts: Path
) -> None:
    environment = prod(orders_project)
    at_r1(environment, users["alice"])
    with contextlib.closing(psycopg2.connect(environment.get_url())) as db, db.cursor() as cur:
        cur.execute("INSERT INTO orders (id) SELECT generate_series(1, 5000)")
        db.commit()
    environment.required_approvals = 1
    environment.save()
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
    bob = as_user(browser, live_server.url, "bob")

    bob.goto(f"{live_server.url}{environment.get_absolute_url()}")
    bob.get_by_label("Upgrade").check()
    bob.get_by_label("Target", exact=True).select_option("heads")
    bob.get_by_role("button", name="Plan the job").click()
    expect(bob.locator("#sql-preview")).to_contain_text("ALTER TABLE orders", timeout=60_000)
    plan_url = bob.url
    bob.get_by_role("button", name="Rehearse on a copy").click()

    expect(bob.locator("#rehearsal-of")).to_contain_text("Rehearses the plan of job #")
    expect(bob.get_by_test_id("job-status")).to_have_text("succeeded", timeout=90_000)
    expect(bob.get_by_test_id("rehearsal")).to_contain_text("Rehearsed on a copy of prod from")
    bob.goto(plan_url)
    expect(bob.get_by_test_id("rehearsal")).to_contain_text("Rehearsed on a copy of prod from")
    bob.get_by_role("button", name="Ask for approval").click()
    expect(bob.get_by_test_id("job-status")).to_have_text("awaiting_approval")

    alice = as_user(browser, live_server.url, "alice")
    alice.goto(f"{live_server.url}/approvals/")
    request = alice.get_by_test_id("approval-request").first
    expect(request.get_by_test_id("rehearsal")).to_contain_text("Rehearsed on a copy of prod")
    expect(request.locator("table[id^=rehearsal-times]")).to_contain_text("r3")
    docs_screenshot(request, "rehearsal", artifacts)
    request.get_by_label("Comment").fill("rehearsed on a copy: fine")
    request.get_by_role("button", name="Approve plan").click()

    alice.goto(plan_url)
    expect(alice.get_by_test_id("job-status")).to_have_text("succeeded", timeout=90_000)
    # a worker proves the result soon after, and the page, still following, shows it
    expect(alice.locator("#job-proof")).to_contain_text(
        "Proof after the run: the schema is the one its revisions build.", timeout=90_000
    )
    with contextlib.closing(psycopg2.connect(environment.get_url())) as db, db.cursor() as cur:
        cur.execute("SELECT version_num FROM alembic_version")
        assert cur.fetchall() == [("r3",)]
