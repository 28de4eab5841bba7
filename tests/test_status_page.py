"""The status page (``GET /api/health/ui``) over plain HTTP, on a real app: login, headers, escaping, the
checklist's words, and the ``check --html`` snapshot. The browser's view of it: test_status_page_browser.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from html import escape, unescape
from pathlib import Path

import pytest

from otel_reliability import cli
from tests.support import ROOT, AppProcess, http, start_app, wait_until

pytestmark = pytest.mark.integration

TOKEN = "page-token-0123456789"
UI = "/api/health/ui"
HOSTILE = "<img src=x onerror=alert(1)>"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def start_status_app(log_dir: Path) -> AppProcess:
    env = {"OTEL_RELIABILITY_HEALTH_TOKEN": TOKEN, "OTEL_RELIABILITY_CRITICAL_BREAKERS": "payments"}
    return start_app("status_app:app", app_dir=ROOT / "tests" / "apps" / "ui", env=env, log_dir=log_dir)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    started = start_status_app(tmp_path_factory.mktemp("ui"))
    try:
        assert http("POST", started.url + "/open/0")[0] == 200  # payments: critical, open
        for _ in range(3):
            http("GET", started.url + "/ok")
        http("GET", started.url + "/fail/a")
        yield started
    finally:
        started.stop()


def page(app: AppProcess, headers: dict[str, str] | None = None, path: str = UI) -> tuple[int, dict[str, str], str]:
    status, head, body = http("GET", app.url + path, headers=headers)
    return status, {k.lower(): v for k, v in head.items()}, body.decode()


def test_without_the_token_401_asks_the_browser_for_basic_credentials(app: AppProcess) -> None:
    for headers in ({}, {"Accept": "application/json"}, {"Authorization": "Bearer wrong-token-123"}):
        status, head, body = page(app, headers)
        assert status == 401
        assert head["www-authenticate"].startswith('Basic realm="otel-reliability health"')
        assert TOKEN not in body and "payments" not in body


def test_basic_login_takes_any_user_name_and_the_token_as_password(app: AppProcess) -> None:
    assert page(app, basic("anyone", TOKEN))[0] == 200
    assert page(app, basic("", TOKEN))[0] == 200
    assert page(app, basic("anyone", "wrong-token-123"))[0] == 401
    assert page(app, {"Authorization": "Basic !!not-base64!!"})[0] == 401
    assert page(app, {"Authorization": f"Bearer {TOKEN}"})[0] == 200  # scripts keep the bearer token


def test_strict_content_security_policy_allows_only_its_own_script_and_its_inline_sheet(app: AppProcess) -> None:
    _status, head, body = page(app, basic("me", TOKEN))
    csp = head["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["connect-src"] == "'self'"
    assert "unsafe" not in csp and "*" not in csp and "http" not in csp
    sheet = re.search(r"<style>(.*?)</style>", body, re.S)
    assert sheet is not None
    digest = base64.b64encode(hashlib.sha256(sheet.group(1).encode()).digest()).decode()
    assert directives["style-src"] == f"'sha256-{digest}'"
    assert head["cache-control"] == "no-store" and head["x-content-type-options"] == "nosniff"
    assert re.findall(r"<script[^>]*>", body) == ['<script src="/api/health/ui/page.js" defer>']
    tags = re.sub(r'"[^"]*"', '""', body)  # attribute values out (a breaker's name is one, escaped)
    assert re.search(r"<[^>]+\s(?:style|on\w+)=", tags) is None  # no inline style or event handler


def test_the_page_is_self_contained_and_small(app: AppProcess) -> None:
    _, _, body = page(app, basic("me", TOKEN))
    assert not re.search(r"(?:src|href)=\"(?!/api/health/ui/page\.js|data:)", body)
    assert "http://" not in body and "https://" not in body and "url(" not in body and "@import" not in body
    script_status, _, script = page(app, path=UI + "/page.js")
    assert script_status == 200 and "://" not in script
    assert len(body.encode()) + len(script.encode()) < 40 * 1024


def test_every_name_from_the_app_is_escaped(app: AppProcess) -> None:
    _, _, body = page(app, basic("me", TOKEN))
    assert HOSTILE not in body and "<b>bold</b>" not in body
    assert escape(HOSTILE) in body and escape('search "quoted" & <b>bold</b>') in body
    assert escape("nightly <export>") in body  # an operation name


def test_the_page_shows_the_same_verdict_and_advice_as_the_check(
    app: AppProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, body = page(app, basic("me", TOKEN))
    code = cli.main(["check", "--url", app.url, "--token", TOKEN, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    verdict = body.split('id="verdict"', 1)[1].split("</section>", 1)[0]
    for item in report["items"]:
        if item["name"] == "stuck operations":  # the check adds where the admin list is; the page does not
            continue
        assert (
            f'<li class="i-{item["status"]}"><span class="badge">{item["status"]}</span> <b>{item["name"]}</b>'
            in verdict
        )
        if item["name"] != "resources":  # its figures move between two readings
            assert escape(item["summary"]) in verdict, item["name"]
        if item["action"]:
            assert escape(item["action"]) in verdict, item["name"]
    assert "1 item(s) need action: breakers" in verdict


def test_json_poll_answers_the_sections_and_api_health_serves_the_page_to_a_browser(app: AppProcess) -> None:
    status, head, body = page(app, {"Accept": "application/json", **basic("me", TOKEN)})
    parts = json.loads(body)
    assert status == 200 and head["content-type"].startswith("application/json")
    assert set(parts) == {"html", "title", "status", "observed_at"} and 'data-breaker="payments"' in parts["html"]
    # A browser at /api/health gets the page (and the route's 503, payments being critical and open) ...
    status, head, body = page(app, {"Accept": BROWSER_ACCEPT, **basic("me", TOKEN)}, "/api/health")
    assert status == 503 and body.startswith("<!doctype html>") and 'data-poll="/api/health/ui"' in body
    assert page(app, {"Accept": BROWSER_ACCEPT}, "/api/health")[0] == 401
    # ... probes, curl and scripts keep the JSON, without any token.
    for accept in ("*/*", "application/json", "", "text/html;q=0.5, application/json"):
        status, head, body = page(app, {"Accept": accept} if accept else {}, "/api/health")
        assert status == 503 and json.loads(body)["status"] == "unhealthy", accept


def test_check_html_writes_a_static_snapshot(
    app: AppProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "status.html"
    assert cli.main(["check", "--url", app.url, "--token", TOKEN, "--html", str(out)]) == 1  # payments is open
    snapshot = out.read_text()
    assert "<script" not in snapshot and 'http-equiv="Content-Security-Policy"' in snapshot
    assert "script-src 'none'" in unescape(snapshot) and "snapshot of the readings of" in snapshot
    assert 'data-breaker="payments"' in snapshot and escape(HOSTILE) in snapshot
    assert TOKEN not in snapshot
    capsys.readouterr()
    missing = tmp_path / "none.html"
    assert cli.main(["check", "--url", app.url, "--html", str(missing)]) == 1
    assert not missing.exists() and "--html needs the health token" in capsys.readouterr().err


def test_the_token_never_reaches_the_log(app: AppProcess) -> None:
    page(app, basic("me", TOKEN))
    page(app, {"Authorization": f"Bearer {TOKEN}"})
    assert TOKEN not in app.log()


def test_under_prefork_the_page_speaks_for_the_whole_host(tmp_path: Path) -> None:
    """gunicorn with two workers: whichever answers, the page says it covers both, with one line per worker, and
    the breaker one worker opened shows as open (the host's worst state)."""
    env = {"OTEL_RELIABILITY_HEALTH_TOKEN": TOKEN}
    host = start_app(
        "status_app:app",
        app_dir=ROOT / "tests" / "apps" / "ui",
        env=env,
        log_dir=tmp_path,
        server="gunicorn",
        workers=2,
    )
    try:
        wait_until(
            lambda: json.loads(http("GET", host.url + "/api/health")[2])["workers"] == 2,
            timeout=40,
            what="both workers in the host's readings",
        )
        assert http("POST", host.url + "/open/1")[0] == 200  # in whichever worker takes it
        opened = 'class="breaker b-open" data-breaker="gemini"'
        # Another worker's part of an answer may be up to ~1.45 s behind (otel_reliability/host/timing.py): wait
        # until six pages in a row, whichever worker serves each, show the breaker open.
        wait_until(
            lambda: all(opened in page(host, basic("me", TOKEN))[2] for _ in range(6)),
            timeout=15,
            what="the other worker's breaker",
        )
        for _ in range(6):  # both workers answer in turn
            _, _, body = page(host, basic("me", TOKEN))
            assert "whole host, 2 workers" in body and "<caption>2 workers</caption>" in body
            assert body.count("<tr><td>") >= 2  # a line per worker (and the operations')
            assert opened in body
            assert 'id="errors"' in body and '<svg class="spark"' in body
    finally:
        host.stop()
