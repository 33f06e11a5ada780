"""While a run waits for a lock, its job page says who holds it (a real browser, a real
worker, a real PostgreSQL target and a session that keeps `orders` locked); a plan shows its
lock review beside each revision."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser import as_user
from tests.conftest import at_r1, planned
from tests.conftest import orders_prod as prod
from tests.test_lock_retries import reading_orders, schema_of

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_the_job_page_shows_who_blocks_a_waiting_run_and_clears_it_once_the_lock_is_free(
    browser: Browser,
    live_server,
    orders_project,
    users,
    start_worker,
    settings,
    artifacts: Path,
) -> None:
    environment = prod(orders_project)
    environment.lock_timeout_seconds = 60  # long enough to look at it
    environment.save()
    at_r1(environment, users["alice"])
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
    job = planned(environment, users["alice"], target="r2")
    url = environment.get_url()
    alice = as_user(browser, live_server.url, "alice")
    alice.goto(f"{live_server.url}{job.get_absolute_url()}")
    expect(alice.locator("#job-timeouts")).to_contain_text(
        "lock_timeout 1 min, statement_timeout off; a run that times out waiting for a lock is "
        "tried up to 3 times"
    )

    with reading_orders(url, app="billing") as blocker:
        pid = blocker.get_backend_pid()
        alice.get_by_role("button", name="Queue this job").click()

        wait = alice.locator("#job-lock-wait")
        expect(wait).to_contain_text("Blocked: alembic is waiting", timeout=90_000)
        expect(wait).to_contain_text(
            f"for AccessExclusiveLock on orders, held by pid {pid} (user postgres, app=billing, "
            "from 127.0.0.1, idle in transaction for"
        )
        expect(wait).to_contain_text("last query: SELECT count(*) FROM orders")
        expect(alice.get_by_test_id("job-status")).to_have_text("running")
        alice.screenshot(path=artifacts / "job-lock-wait.png", full_page=True)
        blocker.commit()

        expect(alice.get_by_test_id("job-status")).to_have_text("succeeded", timeout=60_000)
    expect(alice.locator("#job-lock-wait")).to_have_count(0)
    expect(alice.locator("#job-log")).to_contain_text(f"held by pid {pid}")
    assert schema_of(url) == ([("r2",)], ["id", "note"])


def test_the_plan_page_shows_the_lock_review_beside_its_revision(
    browser: Browser, live_server, index_on_orders, users, artifacts: Path
) -> None:
    environment = prod(index_on_orders)
    at_r1(environment, users["alice"])
    environment.lock_review_approval = "warning"
    environment.save()
    job = planned(environment, users["alice"], target="r2")
    alice = as_user(browser, live_server.url, "alice")

    alice.goto(f"{live_server.url}{job.get_absolute_url()}")

    risks = alice.locator("#plan-revisions tr", has_text="r2").locator(".finding-warning")
    expect(risks.first).to_contain_text(
        "require-concurrent-index-creation: builds index ix_orders_note without CONCURRENTLY"
    )
    expect(risks.first).to_contain_text("takes SHARE on orders). Safer: op.create_index(")
    expect(risks.nth(1)).to_contain_text("constraint-missing-not-valid")
    expect(risks.nth(1)).to_contain_text("of its SQL; takes ACCESS EXCLUSIVE on orders")
    expect(alice.locator("#lock-policy")).to_contain_text(
        "This plan needs one approval more than prod's usual 0"
    )
    expect(alice.locator("ul.policy")).to_contain_text(
        "Lock review: one with a warning or worse needs one approval more."
    )
    expect(alice.get_by_role("button", name="Ask for approval")).to_be_visible()
    alice.screenshot(path=artifacts / "plan-lock-review.png", full_page=True)
