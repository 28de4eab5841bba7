"""Health that never lags or lies: a real uvicorn under opentelemetry-instrument with the *default* health cache,
and nothing scraping :9464 (health must be fresh without a scrape to refresh it)."""

from __future__ import annotations

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from otel_reliability.config import HEALTH_CACHE
from tests.support import BIN, ROOT, get_json, http

APPS = ROOT / "tests" / "apps"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DEFAULTS = {"OTEL_RELIABILITY_HEALTH_CACHE": HEALTH_CACHE.default}  # undo tests.support's 0: the user's default


def check(url: str) -> tuple[int, str]:
    done = subprocess.run(
        [str(BIN / "otel-reliability"), "check", "--url", url], capture_output=True, text=True, timeout=30
    )
    return done.returncode, done.stdout


def test_first_call_shows_every_breaker_and_a_change_shows_on_the_next_call(app_factory: Any) -> None:
    app = app_factory("fresh_app:app", app_dir=APPS, env=DEFAULTS)
    status, body = get_json(app.url + "/api/health/circuit-breakers")
    assert status == 200
    assert set(body["breakers"]) == {"alpha", "beta", "gamma", "delta"}
    assert all(b["state"] == "closed" for b in body["breakers"].values())
    assert RFC3339.match(body["observed_at"])
    _, resources = get_json(app.url + "/api/health/resources")
    assert resources["memory_mb"] > 0 and RFC3339.match(resources["observed_at"])
    code, out = check(app.url)
    assert code == 0, out

    # alpha opens (two failures): the very next call of each kind says so.
    for _ in range(2):
        http("GET", app.url + "/call/alpha?fail=true")
    _, body = get_json(app.url + "/api/health/circuit-breakers")
    assert body["breakers"]["alpha"]["state"] == "open" and body["open_count"] == 1
    _, aggregate = get_json(app.url + "/api/health")
    assert aggregate["status"] == "degraded" and aggregate["checks"]["circuit-breakers"]["open"] == ["alpha"]
    code, out = check(app.url)
    assert code == 1 and "alpha" in out, out

    # The breaker of the circuitbreaker library too (transitions derived on its call path).
    for _ in range(2):
        http("GET", app.url + "/call/delta?fail=true")
    _, body = get_json(app.url + "/api/health/circuit-breakers")
    assert body["breakers"]["delta"]["state"] == "open"
    assert body["breakers"]["delta"]["transitions"]["open"] == 1


def test_error_counts_settle_within_one_second(app_factory: Any) -> None:
    app = app_factory("fresh_app:app", app_dir=APPS, env=DEFAULTS)
    get_json(app.url + "/api/health/error-rate")  # a collection now, before the errors: it must not be reused
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: http("GET", app.url + "/boom")[0], range(40)))
    assert statuses.count(500) == 40
    time.sleep(1.0)
    _, body = get_json(app.url + "/api/health/error-rate")
    assert body["error_count"] == 40, body
    assert RFC3339.match(body["observed_at"])


def test_health_json_has_a_time_per_check(app_factory: Any) -> None:
    app = app_factory("fresh_app:app", app_dir=APPS, env=DEFAULTS)
    _, _, raw = http("GET", app.url + "/api/health", headers={"Accept": "application/health+json"})
    import json

    body = json.loads(raw)
    assert RFC3339.match(body["observed_at"])
    assert all(RFC3339.match(entry[0]["time"]) for entry in body["checks"].values())
