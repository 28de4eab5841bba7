"""Load and failure scenarios for the example app: make every signal come alive, on purpose.

    python examples/load.py --scenario steady --duration 20
    python examples/load.py --scenario outage --service gemini
    python examples/load.py --scenario error-burst
    python examples/load.py --scenario pool-saturation --duration 8
    python examples/load.py --scenario stuck-job

Scenarios (what you should see afterwards):
- steady: a mix of reads, writes, provider calls and processing jobs.                -> all healthy
- outage: one provider fails every call (staged on the fake services), then recovers -> its breaker opens,
  /api/health is degraded, callers get 503 + Retry-After; closes again after the reset timeout.
- error-burst: a buggy route answers 500 many times in a row.                        -> error rate up
- pool-saturation: more slow report requests at once than the pool has connections   -> pool warning (and
  pending requests, maybe timeouts) while it runs.
- contention: concurrent increments of one counter under SERIALIZABLE -> retries counted
  (db_client_transaction_retries_total), no increment lost.
- stuck-job: a provider hangs while episodes are processing.                         -> in-flight operations
  and processing rows age; past OTEL_RELIABILITY_STUCK_THRESHOLD they are stuck (admin view, cleanup).
- tour: a short steady run, an outage of gemini and an error burst (what ``make demo`` runs).

Every scenario is bounded by ``--duration`` seconds and ``--max-requests`` requests, every request by a timeout,
and it prints one progress line per second. Only the standard library.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

SERVICE_ROUTES = {  # the app route that reaches each provider synchronously (see examples/app/main.py)
    "assemblyai": "transcribe",
    "gemini": "summarize",
    "auphonic": "enhance",
    "elevenlabs": "voice",
    "gcs": "publish",
}


def call(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One request; (status, parsed JSON or None). Status 0 means no response (refused, timeout)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


@dataclass
class Run:
    """Counts and bounds for one scenario run; thread-safe."""

    app: str
    fake: str
    name: str
    duration: float
    max_requests: int
    quiet: bool = False
    started: float = field(default_factory=time.monotonic)
    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_print: float = 0.0

    def remaining(self) -> float:
        return self.duration - (time.monotonic() - self.started)

    def more(self) -> bool:
        return self.remaining() > 0 and self.counts["requests"] < self.max_requests

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        with self._lock:
            if self.counts["requests"] >= self.max_requests:
                return -1, None
            self.counts["requests"] += 1
        status, payload = call(method, self.app + path, body, timeout=min(timeout, max(self.remaining(), 1.0)))
        bucket = "no response" if status == 0 else f"{status // 100}xx"
        with self._lock:
            self.counts[bucket] += 1
            if status == 503:
                self.counts["503"] += 1
        self.progress()
        return status, payload

    def progress(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not final and now - self._last_print < 1.0):
            return
        self._last_print = now
        shown = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()) if k != "requests")
        label = "done" if final else f"{now - self.started:5.1f}s"
        print(f"[{self.name}] {label} requests={self.counts['requests']} {shown}", flush=True)

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"[{self.name}] {message}", flush=True)

    def control(self, service: str, **params: float) -> None:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        status, _ = call("POST", f"{self.fake}/control/{service}?{query}", timeout=5)
        if status != 200:
            raise SystemExit(f"cannot reach the fake services at {self.fake} (HTTP {status})")

    def reset_services(self) -> None:
        call("POST", f"{self.fake}/control/reset", timeout=5)


def _fixture(run: Run, episodes: int = 3) -> tuple[int, list[int]]:
    """A user with a few episodes to work on."""
    status, user = run.request("POST", "/api/users", {"email": f"load-{random.getrandbits(40):x}@example.com",
                                                      "name": "Load Generator"})  # fmt: skip
    if status != 201:
        raise SystemExit(f"cannot create a user on {run.app} (HTTP {status}): is the example app running?")
    ids = []
    for i in range(episodes):
        status, episode = run.request("POST", f"/api/users/{user['id']}/episodes", {"title": f"Episode {i + 1}"})
        if status == 201:
            ids.append(episode["id"])
    return user["id"], ids


def _parallel(run: Run, concurrency: int, step: Callable[[], None]) -> None:
    """Run ``step`` from ``concurrency`` threads until the run's bounds are reached."""

    def loop() -> None:
        while run.more():
            step()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(loop) for _ in range(concurrency)]:
            future.result()


def steady(run: Run, concurrency: int = 4) -> None:
    user_id, episodes = _fixture(run)

    def step() -> None:
        episode = random.choice(episodes)
        roll = random.random()
        if roll < 0.35:
            run.request("GET", f"/api/episodes/{episode}")
        elif roll < 0.5:
            run.request("GET", "/api/episodes?limit=20")
        elif roll < 0.6:
            status, created = run.request("POST", f"/api/users/{user_id}/episodes", {"title": "Another episode"})
            if status == 201:
                episodes.append(created["id"])
        elif roll < 0.9:
            route = random.choice(list(SERVICE_ROUTES.values()))
            run.request("POST", f"/api/episodes/{episode}/{route}")
        elif roll < 0.95:
            run.request("POST", f"/api/episodes/{episode}/process")
        else:
            run.request("GET", "/api/reports/usage")
        time.sleep(0.02)

    _parallel(run, concurrency, step)


def outage(run: Run, service: str, restore: bool = True) -> None:
    route = SERVICE_ROUTES[service]
    _, episodes = _fixture(run, episodes=1)
    run.say(f"staging an outage of {service}: every call fails")
    run.control(service, failure_rate=1)
    opened = False
    try:
        while run.more():
            status, _ = run.request("POST", f"/api/episodes/{episodes[0]}/{route}")
            if status == 503 and not opened:
                opened = True
                run.say(f"{service}'s breaker is open: calls now fail fast with 503 (+ Retry-After)")
            time.sleep(0.05)
    finally:
        if restore:
            run.control(service, failure_rate=0)
            run.say(f"{service} is back; its breaker closes after the first successful call after its reset timeout")
    if not opened:
        run.say(f"warning: {service}'s breaker did not open within the run")


def error_burst(run: Run, concurrency: int = 4) -> None:
    _, _ = _fixture(run, episodes=0)
    status, user = run.request("POST", "/api/users", {"email": f"empty-{random.getrandbits(40):x}@example.com",
                                                      "name": "No Episodes"})  # fmt: skip
    if status != 201:
        raise SystemExit(f"cannot create a user (HTTP {status})")
    run.say("calling a route with a bug (division by zero for a user without episodes): 500s")
    _parallel(run, concurrency, lambda: run.request("GET", f"/api/users/{user['id']}/stats") and None)


def contention(run: Run, concurrency: int = 6) -> None:
    _, episodes = _fixture(run, episodes=1)
    run.say(f"{concurrency} callers counting plays of one episode: conflicting transactions, retried")
    _parallel(run, concurrency, lambda: run.request("POST", f"/api/episodes/{episodes[0]}/play") and None)


def pool_saturation(run: Run, concurrency: int = 10, hold_ms: int = 1500) -> None:
    run.say(f"{concurrency} report requests at a time, each holding a database connection for {hold_ms} ms")
    path = f"/api/reports/usage?hold_ms={hold_ms}"
    _parallel(run, concurrency, lambda: run.request("GET", path, timeout=30) and None)


def stuck_job(run: Run, jobs: int = 2) -> None:
    _, episodes = _fixture(run, episodes=jobs)
    run.say("auphonic hangs (latency 1 h): processing jobs will wait on it")
    run.control("auphonic", latency_ms=3_600_000)
    for episode in episodes:
        run.request("POST", f"/api/episodes/{episode}/process")
    run.say(f"{len(episodes)} job(s) processing: episodes {episodes}")
    while run.more():
        time.sleep(0.2)
        run.progress()
    run.say(
        "left hanging on purpose: past OTEL_RELIABILITY_STUCK_THRESHOLD they show in the admin view "
        "(GET /api/admin/monitoring/stuck-operations). Release the provider with "
        f"curl -X POST '{run.fake}/control/auphonic?latency_ms=0'"
    )


def tour(run: Run) -> None:
    third = run.duration / 3
    run.duration = third
    steady(run)
    run.started, run.name = time.monotonic(), "outage"
    outage(run, "gemini", restore=True)
    run.started, run.name = time.monotonic(), "error-burst"
    run.max_requests = run.counts["requests"] + 60
    error_burst(run)


SCENARIOS = ("steady", "outage", "error-burst", "pool-saturation", "stuck-job", "contention", "tour")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Drive the example app through a named scenario.")
    parser.add_argument("--scenario", choices=SCENARIOS, default="steady")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the example app")
    parser.add_argument("--fake-url", default="http://127.0.0.1:9100", help="the fake services (control endpoint)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds, at most")
    parser.add_argument("--max-requests", type=int, default=2000, help="requests, at most")
    parser.add_argument("--concurrency", type=int, default=None, help="parallel callers (default per scenario)")
    parser.add_argument("--service", choices=sorted(SERVICE_ROUTES), default="assemblyai", help="for outage")
    parser.add_argument("--no-restore", action="store_true", help="outage: leave the service failing")
    parser.add_argument("--hold-ms", type=int, default=1500, help="pool-saturation: how long each request holds")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    run = Run(args.url.rstrip("/"), args.fake_url.rstrip("/"), args.scenario, args.duration, args.max_requests,
              quiet=args.quiet)  # fmt: skip
    extra: dict[str, Any] = {} if args.concurrency is None else {"concurrency": args.concurrency}
    if args.scenario == "steady":
        steady(run, **extra)
    elif args.scenario == "outage":
        outage(run, args.service, restore=not args.no_restore)
    elif args.scenario == "error-burst":
        error_burst(run, **extra)
    elif args.scenario == "pool-saturation":
        pool_saturation(run, hold_ms=args.hold_ms, **extra)
    elif args.scenario == "stuck-job":
        stuck_job(run)
    elif args.scenario == "contention":
        contention(run, **extra)
    else:
        tour(run)
    run.progress(final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
