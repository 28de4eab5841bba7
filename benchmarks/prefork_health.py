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

from otel_reliability.config import HEALTH_CACHE
from tests.support import ROOT, http, start_app

APP_DIR = ROOT / "tests" / "apps" / "prefork"
ENDPOINTS = ("/api/health", "/api/health/error-rate", "/api/health/circuit-breakers", "/api/health/resources")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    label: str, server: str, workers: int, env: dict[str, str], calls: int, pause: float = 0.0, endpoints=ENDPOINTS
) -> list[str]:
    """Sequential health calls, ``pause`` seconds of silence before each (0: back to back)."""
    app = start_app("app:app", app_dir=APP_DIR, server=server, workers=workers, env=env, timeout=60)
    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: http("GET", app.url + "/fail"), range(200)))
            list(pool.map(lambda _: http("GET", app.url + "/dependency"), range(16)))
        time.sleep(1.5)
        rows = []
        for path in endpoints:
            for _ in range(20 if not pause else 2):  # warm-up
                http("GET", app.url + path)
            times = []
            for _ in range(calls):
                time.sleep(pause)
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
    breakers are ~1200): a publication (each worker, every 0.5 s), the master's combination (at most every
    0.25 s, when a worker published), and a worker's health snapshot when the master combined again since its
    last read (the first call after a pause), when only this worker collected, and when nothing changed."""
    import tempfile

    from opentelemetry.sdk.metrics import MeterProvider

    from otel_reliability.host import store
    from otel_reliability.host.master import HostAggregator
    from otel_reliability.host.worker import HostReadings, Publisher
    from otel_reliability.readings import Readings

    def worker() -> Readings:
        readings = Readings(background=False, cache_seconds=60)
        provider = MeterProvider(metric_readers=[readings])
        readings.bind(provider)
        counter = provider.get_meter("b").create_counter("circuit_breaker.calls")
        for i in range(series):
            counter.add(1, {"circuit_breaker.name": f"b{i // 12}", "n": i % 12})
        return readings

    timings: dict[str, list[float]] = {k: [] for k in ("publish", "combine", "changed", "own", "cached")}

    def timed(what: str, call: Any) -> None:
        started = time.perf_counter()
        call()
        timings[what].append((time.perf_counter() - started) * 1000)

    with tempfile.TemporaryDirectory() as base:
        aggregator = HostAggregator(history_interval=5, retention=360, base=base)
        directory = store.Directory(aggregator.path)
        publishers = [Publisher(directory, worker()) for _ in range(workers)]
        for i, publisher in enumerate(publishers):
            publisher.file = store.worker_file(publisher.pid, str(i))
            publisher.publish()
        own = publishers[0]
        reader = HostReadings(directory, own.readings, own.file, own.versions)
        for _ in range(rounds):
            for publisher in publishers:
                timed("publish", publisher.publish)
            timed("combine", aggregator.combine)
            reader._others_at = float("-inf")  # older than OTHERS_MAX_AGE: read on the call
            timed("changed", reader.snapshot)
            own.readings.export()  # this worker collected (every publication does): combine again with the others
            timed("own", reader.snapshot)
            timed("cached", reader.snapshot)
        aggregator.close()
    label = f"{workers} workers x {series} points"
    rows = [
        ("publish", "a worker's publication (collect, encode, write)"),
        ("combine", "the master's combination of every worker (one file)"),
        ("changed", "health snapshot, the master combined since the last read (idle > 0.5 s)"),
        ("own", "health snapshot, this worker collected, combined again"),
        ("cached", "health snapshot, nothing changed"),
    ]
    return [
        f"| {label}: {text} | {statistics.median(timings[key]):.3f} | {percentile(timings[key], 0.99):.3f} |"
        for key, text in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--merge-only", action="store_true", help="only the in-process cost of the host snapshot")
    parser.add_argument("--cold-calls", type=int, default=40, help="calls after 1 s of silence, per endpoint")
    parser.add_argument("--servers-only", action="store_true", help="only the real servers")
    parser.add_argument("--large-only", action="store_true", help="only the servers with 100 breakers per worker")
    args = parser.parse_args()
    if not (args.servers_only or args.large_only):
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
    large = {"PREFORK_EXTRA_BREAKERS": "100"}
    variants = [
        ("gunicorn -w 8, default cache", "gunicorn", 8, {}, args.calls, 0.0, ENDPOINTS),
        ("gunicorn -w 8, cache 0", "gunicorn", 8, {"OTEL_RELIABILITY_HEALTH_CACHE": "0"}, args.calls, 0.0, ENDPOINTS),
        ("uvicorn, 1 process, default cache", "uvicorn", 1, {}, args.calls, 0.0, ENDPOINTS),
    ]
    if args.large_only:
        variants = [
            ("uvicorn, 1 process, 101 breakers, after 1 s of silence", "uvicorn", 1, large, args.cold_calls, 1.0,
             ENDPOINTS[:3]),
        ]  # fmt: skip
    variants += [
        ("gunicorn -w 8, 101 breakers each, default cache", "gunicorn", 8, large, args.calls, 0.0, ENDPOINTS),
        (
            "gunicorn -w 8, 101 breakers each, after 1 s of silence",
            "gunicorn",
            8,
            large,
            args.cold_calls,
            1.0,
            ENDPOINTS[:3],
        ),
    ]
    for label, server, workers, env, calls, pause, endpoints in variants:
        # the product's default (start_app sets 0 for tests)
        env = {"OTEL_RELIABILITY_HEALTH_CACHE": HEALTH_CACHE.default, **env}
        for row in run(label, server, workers, env, calls, pause, endpoints):
            print(row, flush=True)


if __name__ == "__main__":
    main()
