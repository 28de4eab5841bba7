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
from typing import Any

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


def merge_cost(workers: int = 8, series: int = 1200, rounds: int = 50) -> list[str]:
    """In-process cost of the host snapshot for a worker of ``workers``, each with ``series`` data points (100
    breakers are ~1200): when every other worker has published since (files parsed again and combined, at most
    every 0.2 s per answering worker) and when nothing changed (the combination reused)."""
    import tempfile

    from opentelemetry.sdk.metrics import MeterProvider

    from otel_reliability.host import store
    from otel_reliability.host.master import HostAggregator
    from otel_reliability.host.worker import HostReadings, Publisher
    from otel_reliability.readings import Readings

    def worker() -> tuple[Readings, Any]:
        readings = Readings(background=False, cache_seconds=60)
        provider = MeterProvider(metric_readers=[readings])
        readings.bind(provider)
        counter = provider.get_meter("b").create_counter("circuit_breaker.calls")
        for i in range(series):
            counter.add(1, {"circuit_breaker.name": f"b{i // 12}", "n": i % 12})
        return readings, counter

    with tempfile.TemporaryDirectory() as base:
        aggregator = HostAggregator(history_interval=5, retention=360, base=base)
        directory = store.Directory(aggregator.path)
        publishers = [Publisher(directory, worker()[0]) for _ in range(workers - 1)]
        for i, publisher in enumerate(publishers):
            publisher.file = f"w-{publisher.pid}-{i}.json"
            publisher.publish()
        own, _ = worker()
        own.export()
        reader = HostReadings(directory, own, "w-own.json")
        changed: list[float] = []
        own_changed: list[float] = []
        cached: list[float] = []
        for _ in range(rounds):
            for publisher in publishers:
                publisher.publish()
            reader._others_at = float("-inf")  # older than OTHERS_MAX_AGE: read on the call
            started = time.perf_counter()
            reader.snapshot()
            changed.append((time.perf_counter() - started) * 1000)
            own.export()  # this worker collected (every publication does): combine again with the others
            started = time.perf_counter()
            reader.snapshot()
            own_changed.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            reader.snapshot()
            cached.append((time.perf_counter() - started) * 1000)
        aggregator.close()
    label = f"{workers} workers x {series} points"
    return [
        f"| {label}: others' files read on the call (idle > 0.8 s) | {statistics.median(changed):.2f} | "
        f"{percentile(changed, 0.99):.2f} |",
        f"| {label}: this worker collected, combined again | {statistics.median(own_changed):.2f} | "
        f"{percentile(own_changed, 0.99):.2f} |",
        f"| {label}: nothing changed | {statistics.median(cached):.3f} | {percentile(cached, 0.99):.3f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--merge-only", action="store_true", help="only the in-process cost of the host snapshot")
    args = parser.parse_args()
    print("| host snapshot | p50 ms | p99 ms |")
    print("|---|---|---|")
    for series in (12, 1200):
        for row in merge_cost(series=series):
            print(row, flush=True)
    if args.merge_only:
        return
    print()
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
