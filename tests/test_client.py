"""The example retrying client: retries only what the server marks retryable, honours Retry-After, is bounded.

Unit tests run against a scripted local HTTP server with an injected sleep/clock (no real waiting); the
integration test drives the example app through a real outage of one provider.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, http

sys.path.insert(0, str(ROOT / "examples"))
import client
import fake_services


class Scripted:
    """A server that answers the scripted (status, headers, body) replies in order, then 200."""

    def __init__(self, replies: list[tuple[int, dict[str, str], dict[str, object] | None]]) -> None:
        self.replies = list(replies)
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.calls += 1
                status, headers, body = outer.replies.pop(0) if outer.replies else (200, {}, {"ok": True})
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/thing"


@pytest.fixture
def scripted() -> Iterator[type[Scripted]]:
    servers: list[Scripted] = []

    def make(replies: list[tuple[int, dict[str, str], dict[str, object] | None]]) -> Scripted:
        s = Scripted(replies)
        servers.append(s)
        return s

    yield make  # type: ignore[misc]
    for s in servers:
        s.server.shutdown()
        s.server.server_close()


def retryable(code: str = "dependency_unavailable") -> dict[str, object]:
    return {"error": {"code": code, "message": "try later", "retryable": True}}


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_retry_after_is_waited_exactly_then_success(scripted) -> None:
    server = scripted([(503, {"Retry-After": "3"}, retryable()), (503, {"Retry-After": "1"}, retryable())])
    t = FakeTime()
    response = client.request("POST", server.url, sleep=t.sleep, clock=t.clock, rng=lambda: 0.0)
    assert response.status == 200
    assert response.attempts == 3 and server.calls == 3
    assert t.sleeps == [3.0, 1.0]  # the server's hint, not our backoff (rng=0 would have given 0 s)


def test_only_errors_marked_retryable_are_retried(scripted) -> None:
    for status, body in [
        (409, {"error": {"code": "conflict", "message": "exists", "retryable": False}}),
        (500, {"error": {"code": "internal"}}),  # not marked: maybe not safe to repeat
        (503, None),  # no body at all
        (404, {"detail": "Not Found"}),
    ]:
        server = scripted([(status, {"Retry-After": "1"}, body)])
        t = FakeTime()
        response = client.request("POST", server.url, sleep=t.sleep, clock=t.clock)
        assert (response.status, response.attempts, server.calls, t.sleeps) == (status, 1, 1, [])


def test_backoff_is_exponential_with_full_jitter_and_bounded_by_attempts(scripted) -> None:
    server = scripted([(502, {}, retryable("upstream_failed"))] * 10)
    t = FakeTime()
    policy = client.RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=10, budget=100)
    response = client.request("GET", server.url, policy=policy, sleep=t.sleep, clock=t.clock, rng=lambda: 1.0)
    assert response.status == 502 and response.attempts == 4 and server.calls == 4
    assert t.sleeps == [0.5, 1.0, 2.0]  # rng=1.0: the top of each jitter range
    jittered = [client.backoff(3, policy, rng=lambda: 0.25)]
    assert jittered == [1.0]  # a quarter of min(10, 0.5 * 2**3)


def test_gives_up_when_retry_after_exceeds_what_it_would_wait(scripted) -> None:
    server = scripted([(503, {"Retry-After": "120"}, retryable())])
    t = FakeTime()
    response = client.request("GET", server.url, sleep=t.sleep, clock=t.clock)
    assert response.status == 503 and response.attempts == 1 and t.sleeps == []


def test_gives_up_when_the_budget_is_spent(scripted) -> None:
    server = scripted([(503, {"Retry-After": "4"}, retryable())] * 10)
    t = FakeTime()
    policy = client.RetryPolicy(max_attempts=10, max_delay=5, budget=10)
    response = client.request("GET", server.url, policy=policy, sleep=t.sleep, clock=t.clock)
    assert t.sleeps == [4.0, 4.0]  # a third wait would end past the 10 s budget
    assert response.status == 503 and response.attempts == 3


def test_http_date_retry_after() -> None:
    in_ten = formatdate(time.time() + 10, usegmt=True)
    assert 8 <= (client.retry_after_seconds(in_ten) or 0) <= 10
    assert client.retry_after_seconds("7") == 7
    assert client.retry_after_seconds("soon") is None


def test_network_errors_are_retried_only_for_idempotent_requests() -> None:
    url = f"http://127.0.0.1:{free_port()}/nothing-listens"
    t = FakeTime()
    with pytest.raises((urllib.error.URLError, OSError)):
        client.request("POST", url, sleep=t.sleep, clock=t.clock, timeout=1)
    assert t.sleeps == []  # a POST that may have been applied is not repeated
    with pytest.raises((urllib.error.URLError, OSError)):
        client.request("GET", url, sleep=t.sleep, clock=t.clock, timeout=1, rng=lambda: 0.0)
    assert len(t.sleeps) == client.RetryPolicy().max_attempts - 1


# --- against the example app during an outage ----------------------------------------------------------------


@pytest.fixture
def outage_app(app_factory, tmp_path: Path) -> Iterator[tuple[object, ThreadingHTTPServer]]:
    fake = fake_services.serve(free_port())
    app = app_factory(
        "app.main:app",
        env={
            "FAKE_SERVICES_URL": f"http://127.0.0.1:{fake.server_address[1]}",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'client.db'}",
            "EXAMPLE_BREAKER_RESET_TIMEOUT": "2",
            "EXAMPLE_BREAKER_FAIL_MAX": "3",
        },
    )
    try:
        yield app, fake
    finally:
        fake.shutdown()
        fake.server_close()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("service", "route"),
    [("gemini", "summarize"), ("gcs", "publish")],  # a pybreaker breaker (library's 503) and the app's own
)
def test_client_rides_out_an_outage_and_honours_retry_after(outage_app, service: str, route: str) -> None:
    app, fake = outage_app
    fake_url = f"http://127.0.0.1:{fake.server_address[1]}"
    assert http("POST", f"{fake_url}/control/{service}?failure_rate=1")[0] == 200
    seen: list[tuple[int, float, str]] = []

    def on_retry(attempt: int, wait: float, reason: str) -> None:
        seen.append((attempt, wait, reason))
        if reason.startswith("HTTP 503"):  # the breaker is open: the provider comes back while we wait
            http("POST", f"{fake_url}/control/{service}?failure_rate=0")

    policy = client.RetryPolicy(max_attempts=8, base_delay=0.05, max_delay=5, budget=20)
    started = time.monotonic()
    response = client.request("POST", f"{app.url}/api/episodes/1/{route}", policy=policy, on_retry=on_retry)
    elapsed = time.monotonic() - started

    assert response.status == 200, (response.status, response.body, seen)
    reasons = [r for _, _, r in seen]
    assert reasons[0].startswith("HTTP 502"), seen  # the provider's own failures, marked retryable by the app
    opened = [(a, w) for a, w, r in seen if r.startswith("HTTP 503")]
    assert opened, f"the breaker never answered 503: {seen}"
    attempt, wait = opened[0]
    assert 1 <= wait <= 2, seen  # Retry-After: the seconds until the breaker lets a trial call through
    assert elapsed >= wait
    assert response.attempts == attempt + 1  # the first call after Retry-After succeeded (half-open trial)
