"""The status page in a real browser: Debian's Chromium (``/usr/bin/chromium``, installed by
scripts/test-services.sh) driven by Playwright, which cannot download a browser of its own here.

It renders every breaker, shows one opened meanwhile as open within 3 s without a reload, shows lost contact
when the app stops, renders a breaker named like an HTML tag as text (no element, no script), logs no console
error, and sends no request outside its own origin.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import AppProcess, http, require
from tests.test_status_page import HOSTILE, TOKEN, UI, start_status_app

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NAMES = {"payments", "gemini", HOSTILE, 'search "quoted" & <b>bold</b>'}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(Path(CHROMIUM).exists() or shutil.which("chromium") is not None, "chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package (pip install -e '.[dev]')")
        raise
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Watched:
    """A page logged in with HTTP Basic, recording console errors, page errors, dialogs and every request."""

    def __init__(self, browser: Any, app: AppProcess) -> None:
        self.context = browser.new_context(
            http_credentials={"username": "operator", "password": TOKEN}, viewport={"width": 390, "height": 844}
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.loads = 0
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("load", lambda _page: self._loaded())
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(app.url + UI)
        self.page.wait_for_selector("#contact:has-text('live')")

    def _loaded(self) -> None:
        self.loads += 1

    def __enter__(self) -> Watched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    started = start_status_app(tmp_path_factory.mktemp("ui-browser"))
    try:
        yield started
    finally:
        started.stop()


def test_the_page_renders_every_breaker_and_a_hostile_name_as_text(browser: Any, app: AppProcess) -> None:
    with Watched(browser, app) as watched:
        page = watched.page
        names = page.locator("[data-breaker] h3 .name").all_text_contents()
        assert set(names) == NAMES
        assert page.locator("img, b:text('bold')").count() == 0  # no element made of a name
        assert page.get_by_text(HOSTILE, exact=True).count() == 1
        page.wait_for_timeout(2500)  # one poll: its swapped-in sections are escaped too
        assert page.locator("img").count() == 0 and watched.dialogs == []
        assert page.locator("#operations").get_by_text("nightly <export>", exact=True).count() == 1
        assert watched.errors == []
        assert all(url.startswith(app.url + "/") for url in watched.requests), watched.requests


def test_an_opened_breaker_shows_as_open_within_3_s_without_a_reload(browser: Any, app: AppProcess) -> None:
    with Watched(browser, app) as watched:
        page = watched.page
        gemini = page.locator('[data-breaker="gemini"]')
        assert gemini.get_attribute("class") == "breaker b-closed"
        page.evaluate("window.__sameDocument = true")
        assert http("POST", app.url + "/open/1")[0] == 200
        opened = time.monotonic()
        page.wait_for_selector('[data-breaker="gemini"].b-open', timeout=3000)
        seconds = time.monotonic() - opened
        assert seconds < 3.0
        assert page.evaluate("window.__sameDocument") is True and watched.loads == 1
        assert page.locator('[data-breaker="gemini"] .state').text_content() == "OPEN"
        assert "for " in (page.locator('[data-breaker="gemini"] .since').text_content() or "")
        assert page.locator("#verdict h2").text_content() == "1 item(s) need action: breakers"
        assert watched.errors == []
        assert all(url.startswith(app.url + "/") for url in watched.requests), watched.requests


def test_lost_contact_is_shown_when_the_app_stops(browser: Any, tmp_path: Path) -> None:
    own = start_status_app(tmp_path)
    try:
        with Watched(browser, own) as watched:
            page = watched.page
            assert "CONTACT LOST" not in (page.locator("#contact").text_content() or "")
            own.stop()
            page.wait_for_selector("body.lost", timeout=10_000)
            text = page.locator("#contact").text_content() or ""
            assert text.startswith("CONTACT LOST since ") and "showing the readings of" in text
            # The sections stay (dimmed), so the last readings can still be read.
            assert page.locator("[data-breaker]").count() == len(NAMES)
            assert [e for e in watched.errors if "ERR_CONNECTION_REFUSED" not in e] == []
    finally:
        own.stop()
