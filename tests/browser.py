"""Shared browser fixtures: Playwright driving Debian's Chromium (never a downloaded one)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium for this module: Debian's, never a downloaded one.

    While Playwright's sync API is alive it leaves its event loop marked as running in this
    thread, and Django then refuses every ORM call in it (the fixtures', the test database's
    set-up and flushes) with SynchronousOnlyOperation. DJANGO_ALLOW_ASYNC_UNSAFE is the known
    workaround; it is set for exactly as long as Playwright runs. Module scope, not session:
    Playwright stopped, the loop is no longer marked running, so the tests in other modules
    run with Django's check intact.
    """
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium "
            "(apt-get install chromium); they never download one.",
            pytrace=False,
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            yield browser
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    yield page
    context.close()


def log_in(page: Page, base_url: str, username: str, password: str) -> None:
    page.goto(base_url + "/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def as_user(browser: Browser, base_url: str, name: str, *, width: int = 1280) -> Page:
    """A browser of one's own (cookies and all), logged in as `name` (password "pw-<name>")."""
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    log_in(page, base_url, name, "pw-" + name)
    expect(page.get_by_role("heading", name="Migration state")).to_be_visible()
    return page


DOCS = Path(__file__).resolve().parent.parent / "docs"


def docs_screenshot(page: Page | Locator, name: str, artifacts: Path, **options) -> None:
    """A screenshot the README shows: kept with the test artifacts, and written over
    docs/screenshot-<name>.png when RETORT_UPDATE_SCREENSHOTS=1 (`make screenshots`)."""
    path = artifacts / f"screenshot-{name}.png"
    page.screenshot(path=path, **options)
    if os.environ.get("RETORT_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(path, DOCS / path.name)
