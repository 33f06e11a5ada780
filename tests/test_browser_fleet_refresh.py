"""The workers keep the overview true: with a real worker and Celery beat reading 3 SQLite and
3 PostgreSQL databases, a migration someone runs by hand shows on the open overview within one
refresh interval, without a reload, as exactly one change made outside Retort."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from environments import reads
from environments.models import AuditEvent, CurrentState, StateChange
from examples.inventory import revisions as inv
from tests.browser import as_user
from tests.conftest import alembic, env, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

REFRESH_SECONDS = 2


def test_a_hand_run_upgrade_is_on_the_open_overview_within_one_refresh_as_one_change(
    browser,
    live_server,
    inventory,
    make_project,
    sqlite_url,
    pg_database,
    users,
    start_worker,
    artifacts: Path,
):
    targets = {}
    for number, target in enumerate((inv.DEV_TARGET, inv.STAGING_TARGET, inv.PROD_TARGET)):
        for kind, url in (
            (f"lite{number}", sqlite_url(f"lite{number}")),
            (f"pg{number}", pg_database()),
        ):
            alembic(inventory, url, "upgrade", target)
            targets[kind] = url
    project = make_project(inventory, targets)
    start_worker(
        beat=True,
        env={
            "RETORT_REFRESH_SECONDS": str(REFRESH_SECONDS),
            "RETORT_REFRESH_TICK_SECONDS": "0.5",
        },
    )
    assert wait_for(lambda: CurrentState.objects.filter(checked_at__isnull=False).count() == 6)
    page: Page = as_user(browser, live_server.url, "alice")
    badge = page.locator('article.card[aria-label="pg2"]').get_by_test_id("badge")
    expect(badge).to_have_text("6 behind")
    page.evaluate("() => { window.__stayed = 1; }")
    pg2 = env(project, "pg2")
    reads_before = CurrentState.objects.get(environment=pg2).checked_at

    alembic(inventory, targets["pg2"], "upgrade", "head")

    # one refresh interval for a worker to read it, one poll of the page (10 s) to show it
    expect(badge).to_have_text("current", timeout=(REFRESH_SECONDS + 10 + 5) * 1000)
    assert page.evaluate("() => window.__stayed") == 1, "the page was reloaded"
    page.screenshot(path=artifacts / "fleet-refresh-after-upgrade.png", full_page=True)
    assert CurrentState.objects.get(environment=pg2).checked_at > reads_before
    changes = StateChange.objects.filter(environment=pg2).order_by("at")
    assert [(c.from_status, c.status, c.out_of_band) for c in changes] == [
        ("", "behind", False),
        ("behind", "current", True),
    ]
    assert (
        AuditEvent.objects.filter(action="out_of_band_change", environment_id=pg2.pk).count() == 1
    )
    assert wait_for(
        lambda: CurrentState.objects.get(environment=pg2).checked_at > changes.last().at
    )
    assert StateChange.objects.filter(environment=pg2).count() == 2  # later reads: no new row

    steady = env(project, "lite0")
    for _ in range(100):
        reads.environment_read(environment=steady)
    assert StateChange.objects.filter(environment=steady).count() == 1  # its first read only
