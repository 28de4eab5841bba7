"""Health latency under a prefork server: gunicorn -w 8 answering for the host (issue 12's target: p99 < 10 ms).

Starts the prefork test app (tests/apps/prefork) under opentelemetry-instrument with gunicorn and 8 workers,
puts failures, breaker calls and plain requests through every worker, then times sequential health calls, each
on a new connection (so the kernel spreads them over the workers), client side, including the TCP connect.
Variants: the default health cache, and OTEL_RELIABILITY_HEALTH_CACHE=0 (a collection on every call), against
one uvicorn process with the same app for reference.

    .venv/bin/python benchmarks/prefork_health.py [--calls 300]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import ROOT, http, start_app

APP_DIR = ROOT / "tests" / "apps" / "prefork"
ENDPOINTS = ("/api/health", "/api/health/error-rate", "/api/health/circuit-breakers", "/api/health/resources")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(label: str, server: str, workers: int, env: dict[str, str], calls: int) -> list[str]:
    app = start_app("app:app", app_dir=APP_DIR, server=server, workers=workers, env=env, timeout=60)
    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: http("GET", app.url + "/fail"), range(200)))
            list(pool.map(lambda _: http("GET", app.url + "/dependency"), range(16)))
        time.sleep(1.5)
        rows = []
        for path in ENDPOINTS:
            for _ in range(20):  # warm-up
                http("GET", app.url + path)
            times = []
            for _ in range(calls):
                started = time.perf_counter()
                status, _, _ = http("GET", app.url + path)
                times.append((time.perf_counter() - started) * 1000)
                assert status in (200, 503), status
            rows.append(
                f"| {label} | `{path}` | {statistics.median(times):.2f} | {percentile(times, 0.99):.2f} | "
                f"{max(times):.2f} |"
            )
        return rows
    finally:
        app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    print("| server | endpoint | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    variants = [
        ("gunicorn -w 8, default cache", "gunicorn", 8, {}),
        ("gunicorn -w 8, cache 0", "gunicorn", 8, {"OTEL_RELIABILITY_HEALTH_CACHE": "0"}),
        ("uvicorn, 1 process, default cache", "uvicorn", 1, {}),
    ]
    for label, server, workers, env in variants:
        env = {"OTEL_RELIABILITY_HEALTH_CACHE": "5", **env}
        for row in run(label, server, workers, env, args.calls):
            print(row, flush=True)


if __name__ == "__main__":
    main()
