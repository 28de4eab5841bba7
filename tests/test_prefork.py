"""Prefork servers: every worker has its SDK, its instrumentation and its own service.instance.id."""

from __future__ import annotations

import concurrent.futures
import http.client as http_client
import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, AppProcess, OtlpReceiver, get_json, http, scrape, wait_until

APP_DIR = ROOT / "tests" / "apps" / "prefork"
StartApp = Callable[..., AppProcess]


def spread_requests(app: AppProcess, n: int = 12) -> None:
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda _: http("GET", app.url + "/block"), range(n)))


def instances_serving(receiver: OtlpReceiver) -> set[str]:
    return {
        resource["service.instance.id"]
        for resource, point in receiver.metric_points("http.server.request.duration")
        if point["_value"] > 0
    }


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_two_workers_are_both_instrumented(server: str, app_factory: StartApp, receiver: OtlpReceiver) -> None:
    app = app_factory(
        "app:app",
        app_dir=APP_DIR,
        server=server,
        workers=2,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        },
    )

    def both_workers_seen() -> bool:
        spread_requests(app)
        return len(instances_serving(receiver)) >= 2

    wait_until(both_workers_seen, timeout=40, interval=0.5, what="request metrics from both workers")
    assert len(instances_serving(receiver)) == 2
    ids = set()
    for _ in range(40):
        status, body = get_json(app.url + "/api/health/live")
        assert status == 200
        ids.add(body["service"]["instance_id"])
    assert None not in ids
    app.stop()
    assert "address already in use" not in app.log().lower() or "keeps its SDK" in app.log()


def test_direct_prometheus_with_two_uvicorn_workers_is_served_for_both(app_factory: StartApp) -> None:
    """The supervisor serves :9464 (it outlives workers): process gauges of both workers, one series each."""
    app = app_factory("app:app", app_dir=APP_DIR, server="uvicorn", workers=2)

    def both_workers_on_the_endpoint() -> bool:
        spread_requests(app, 4)
        series = scrape(app.metrics_port).get("process_memory_usage_bytes", [])
        return len({labels.get("service_instance_id") for labels, _ in series} - {None}) == 2

    wait_until(both_workers_on_the_endpoint, timeout=30, interval=0.5, what="both workers on the direct endpoint")


# --- one host, one truth (otel_reliability/host/) ---------------------------------------------------------------
ANSWERS = 12
SETTLE = 1.5  # seconds within which every worker's answer must be the same (workers publish every 0.5 s)


def call(url: str) -> tuple[int, Any]:
    """GET ``url`` as JSON. A worker that reaches --max-requests closes the connections it accepted but did
    not read (a reset: the request never ran); such a call is sent again."""
    for _attempt in range(5):
        try:
            return get_json(url)
        except (ConnectionError, http_client.RemoteDisconnected):
            time.sleep(0.05)
    raise AssertionError(f"{url}: no answer after 5 attempts")


def fire(app: AppProcess, path: str, n: int, threads: int = 8) -> list[int]:
    """``n`` concurrent calls (blocking handlers, so they spread over the workers); the pids that answered."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return [int(body["pid"]) for _, body in pool.map(lambda _: call(app.url + path), range(n))]


def answers(app: AppProcess, path: str) -> list[dict[str, Any]]:
    out = []
    for _ in range(ANSWERS):
        status, body = call(app.url + path)
        assert status == 200, body
        out.append(body)
    return out


def scraped_failures(app: AppProcess, code: str) -> float:
    return sum(
        value
        for labels, value in scrape(app.metrics_port).get("http_server_request_duration_seconds_count", [])
        if labels.get("http_response_status_code") == code
    )


@pytest.mark.parametrize(("server", "workers"), [("gunicorn", 4), ("uvicorn", 3)])
def test_every_answer_counts_every_workers_failures(server: str, workers: int, app_factory: StartApp) -> None:
    app = app_factory("app:app", app_dir=APP_DIR, server=server, workers=workers)
    # Spawned workers (uvicorn) import the app one by one: wait until every one has published once.
    wait_until(lambda: call(app.url + "/api/health/live")[1]["workers"] == workers, timeout=30, what="all workers")
    n = 40
    pids = fire(app, "/fail", n)
    time.sleep(SETTLE)
    bodies = answers(app, "/api/health/error-rate")
    assert [b["error_count"] for b in bodies] == [n] * ANSWERS, f"requests served by {Counter(pids)}"
    assert {b["workers"] for b in bodies} == {workers}
    assert all(b["service"]["name"] and b["service"]["instance_id"] for b in bodies)
    assert scraped_failures(app, "500") == n
    app.stop()
    left = [p for pid in set(pids) for p in Path(tempfile.gettempdir()).glob(f"otel-reliability-host-*/w-{pid}-*")]
    assert not left, "the master removes the shared directory at exit"


def test_breaker_open_in_every_worker_and_a_killed_worker(app_factory: StartApp) -> None:
    """A dependency failing in every worker: every answer shows the breaker open. Then a worker is SIGKILLed:
    its counts stay (in health and on :9464), its gauges go, and its replacement's closed breaker shows."""
    app = app_factory("app:app", app_dir=APP_DIR, server="gunicorn", workers=4)
    calls = 16
    pids = fire(app, "/dependency", calls, threads=calls)
    time.sleep(SETTLE)
    served = set(pids)
    for body in answers(app, "/api/health/circuit-breakers"):
        payments = body["breakers"]["payments"]
        assert payments["state"] == "open", payments
        assert payments["workers_by_state"].get("open") == len(served), (payments, Counter(pids))
        assert payments["calls"]["failure"] + payments["calls"]["rejected"] == calls
        assert body["workers"] == 4
    before = scrape(app.metrics_port)
    open_before = {
        labels["service_instance_id"]
        for labels, value in before["circuit_breaker_state"]
        if labels["circuit_breaker_state"] == "open" and value == 1
    }
    assert len(open_before) == len(served)

    os.kill(pids[0], signal.SIGKILL)

    # gunicorn starts a replacement; its breaker has not failed yet
    def replacement_seen() -> bool:
        payments = get_json(app.url + "/api/health/circuit-breakers")[1]["breakers"]["payments"]
        return bool(payments["workers_by_state"].get("closed") == 1)

    wait_until(replacement_seen, timeout=15, what="the replacement worker's closed breaker")
    time.sleep(SETTLE)
    for body in answers(app, "/api/health/circuit-breakers"):
        payments = body["breakers"]["payments"]
        assert payments["workers_by_state"] == {"open": len(served) - 1, "closed": 1}
        assert payments["calls"]["failure"] + payments["calls"]["rejected"] == calls  # nothing lost
    assert all(b["error_count"] == calls for b in answers(app, "/api/health/error-rate"))
    after = scrape(app.metrics_port)
    instances_after = {lab["service_instance_id"] for lab, _ in after["circuit_breaker_state"]}
    assert len(open_before - instances_after) == 1, "the killed worker's gauges are gone"
    assert len(instances_after) == 4
    assert scraped_failures(app, "502") == calls


def test_recycled_workers_lose_nothing_and_windows_cover_the_host(app_factory: StartApp) -> None:
    """gunicorn -w 2 --max-requests 40: workers are replaced several times. Their requests still count, and
    a window that starts after the first burst counts only the second one, whichever (young) worker answers:
    the window's base is the host's history, kept by the master."""
    app = app_factory(
        "app:app",
        app_dir=APP_DIR,
        server="gunicorn",
        workers=2,
        server_args=("--max-requests", "40"),
        env={"OTEL_RELIABILITY_ERROR_WINDOW": "10", "OTEL_RELIABILITY_SNAPSHOT_INTERVAL": "1"},
    )
    n = 100
    pids = fire(app, "/fail", n)
    first_done = time.monotonic()
    assert len(set(pids)) > 2, "workers were recycled"
    time.sleep(SETTLE)
    assert [b["error_count"] for b in answers(app, "/api/health/error-rate")] == [n] * ANSWERS
    assert scraped_failures(app, "500") == n

    time.sleep(max(0.0, first_done + 10.5 - time.monotonic()))
    m = 20
    fire(app, "/fail", m)
    time.sleep(max(0.0, first_done + 12.5 - time.monotonic()))
    # The window (10 s) now starts >= 2.5 s after the first burst: published (0.5 s) and in the history (1 s).
    assert [b["error_count"] for b in answers(app, "/api/health/error-rate")] == [m] * ANSWERS
    assert scraped_failures(app, "500") == n + m


def test_workers_removed_and_added_at_run_time(app_factory: StartApp) -> None:
    """gunicorn TTOU retires a worker right after the requests (SIGTERM: uvicorn re-raises it after its graceful
    shutdown, so no atexit hook runs; the app's lifespan shutdown publishes), TTIN adds one: the answers follow
    the count and keep every request."""
    app = app_factory("app:app", app_dir=APP_DIR, server="gunicorn", workers=3)
    wait_until(lambda: call(app.url + "/api/health/live")[1]["workers"] == 3, timeout=30, what="all workers")
    n = 30
    fire(app, "/fail", n)
    os.kill(app.proc.pid, signal.SIGTTOU)  # the oldest worker goes at once, within its publication interval

    def workers_now(expected: int) -> bool:
        return bool(call(app.url + "/api/health/live")[1]["workers"] == expected)

    wait_until(lambda: workers_now(2), timeout=20, what="two workers left")
    os.kill(app.proc.pid, signal.SIGTTIN)
    wait_until(lambda: workers_now(3), timeout=20, what="a new third worker")
    time.sleep(SETTLE)
    bodies = answers(app, "/api/health/error-rate")
    seen = [(b["error_count"], b["workers"], b["service"]["instance_id"][:8]) for b in bodies]
    assert [(b["error_count"], b["workers"]) for b in bodies] == [(n, 3)] * ANSWERS, seen
    assert scraped_failures(app, "500") == n


def test_a_worker_killed_under_load_loses_no_completed_request(app_factory: StartApp) -> None:
    """gunicorn -w 2 under concurrent failing requests; one worker SIGKILLed in the middle of the load (its last
    publication up to 0.5 s old). Every response a client received counts, in every health answer and on
    :9464, which never goes backwards; the dead worker's gauges are gone. The HTTP layer's tally (a shared
    memory copy of the request histogram, otel_reliability/crash_safe.py) is what the master reads for it."""
    app = app_factory("app:app", app_dir=APP_DIR, server="gunicorn", workers=2)
    wait_until(lambda: call(app.url + "/api/health/live")[1]["workers"] == 2, timeout=30, what="both workers")
    before = {lab["service_instance_id"] for lab, _ in scrape(app.metrics_port)["process_memory_usage_bytes"]}
    received: list[int] = []  # pids of the failing responses received (lists append atomically)
    stop = time.monotonic() + 3.0

    def client() -> None:
        while time.monotonic() < stop:
            try:
                status, body = get_json(app.url + "/fail")
            except (OSError, http_client.HTTPException, ValueError):
                continue  # the killed worker's requests in flight: no response, nothing to count
            assert status == 500
            received.append(int(body["pid"]))

    scraped: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        clients = [pool.submit(client) for _ in range(8)]
        wait_until(lambda: len(set(received)) == 2, timeout=5, what="both workers serving")
        time.sleep(0.8)
        os.kill(received[-1], signal.SIGKILL)
        while time.monotonic() < stop:
            scraped.append(scraped_failures(app, "500"))
            time.sleep(0.05)
        for future in clients:
            future.result()
    killed_count = Counter(received).most_common()
    assert scraped == sorted(scraped), "the host's counter went backwards"
    n = len(received)
    time.sleep(SETTLE)
    bodies = answers(app, "/api/health/error-rate")
    assert [b["error_count"] for b in bodies] == [n] * ANSWERS, f"responses received per worker: {killed_count}"
    assert scraped_failures(app, "500") == n
    after = {lab["service_instance_id"] for lab, _ in scrape(app.metrics_port)["process_memory_usage_bytes"]}
    assert len(before - after) == 1 and len(after) == 2, "the killed worker's gauges are gone, its replacement's in"
