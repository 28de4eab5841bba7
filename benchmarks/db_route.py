"""Figure 8: what the DB routes cost per request, in-process, in CPU time, bare and instrumented.

The bench app (benchmarks/apps/bench_app.py) is imported in a child process, plain (bare) or under
``opentelemetry-instrument`` with our defaults (ours; with ``--before SRC`` also the package of another source
tree: ours_before), and its ``/db/sqlite`` and ``/db/pg`` routes are called through ASGI, one request after
another: FastAPI, the sync route in the thread pool, a checkout, ``SELECT 1`` and the checkin, plus all our
instrumentation (the lean HTTP layer, ``reliability_pool``, ``reliability_statements``, the Readings' 1 s
snapshot thread). No server and no socket: uvicorn's own per-request work comes on top of every row in a real
server (figure 1). Time is CPU time of the whole child process (``time.process_time``, every thread), best of
several repetitions, variants interleaved round by round: far less disturbed by other load than req/s.

    python benchmarks/run.py --only dbroute [--before /tmp/main-src] [--rounds 3] [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "benchmarks" / "apps"
BIN = Path(sys.executable).parent


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")],
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
    }  # fmt: skip


async def _calls(app: Any, path: str, n: int) -> float:
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.process_time()
    for _ in range(n):
        await app(_scope(path), receive, send)
    spent = time.process_time() - started
    if set(statuses) != {200}:
        raise RuntimeError(f"{path}: statuses {sorted(set(statuses))}")
    return spent / n * 1e6


def child(routes: list[str], n: int, repetitions: int) -> dict[str, float]:
    """In the child process: best CPU µs per request of each route."""
    sys.path.insert(0, str(APP_DIR))
    import bench_app

    async def run() -> dict[str, float]:
        for route in routes:
            await _calls(bench_app.app, route, 300)  # warm-up: middleware stack, pools, statement caches
        return {route: min([await _calls(bench_app.app, route, n) for _ in range(repetitions)]) for route in routes}

    return asyncio.run(run())


def _variants(before: Path | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    instrument = [str(BIN / "opentelemetry-instrument")]
    out = {"bare": ([], {}), "ours": (instrument, {})}
    if before is not None:
        out["ours_before"] = (instrument, {"PYTHONPATH": str(before)})
    return out


def _run_child(
    prefix: list[str], extra_env: dict[str, str], base_env: dict[str, str], routes: list[str], n: int, reps: int
) -> dict[str, float]:
    from tests.support import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(base_env)
    env.update({"OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(free_port())})
    env.update(extra_env)
    # Run as a script, not as benchmarks.db_route: a --before tree has a benchmarks package of its own.
    cmd = [*prefix, str(BIN / "python"), __file__, "--child", ",".join(routes), str(n), str(reps)]
    proc = subprocess.run(cmd, cwd=str(APP_DIR), env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"db_route child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def figure(rounds: int, quick: bool, pg_url: str | None, before: Path | None) -> list[str]:
    n, reps = (200, 1) if quick else (2000, 3)
    routes = ["/db/sqlite"] + (["/db/pg"] if pg_url else [])
    base_env = {"BENCH_SQLITE_URL": "sqlite:////tmp/otel-reliability-bench.db"}
    if pg_url:
        base_env["BENCH_PG_URL"] = pg_url
    variants = _variants(before)
    table: dict[tuple[str, str], list[float]] = {}
    for round_no in range(rounds):
        for name, (prefix, extra) in variants.items():
            got = _run_child(prefix, extra, base_env, routes, n, reps)
            for route, us in got.items():
                table.setdefault((name, route), []).append(us)
            print(
                f"round {round_no + 1} {name:12s} " + "  ".join(f"{r} {v:7.1f} µs" for r, v in got.items()), flush=True
            )
    labels = {
        "bare": "bare FastAPI (no instrumentation)",
        "ours": "ours, defaults (spans not exported)",
        "ours_before": f"ours, defaults, the code of {before.name if before else ''} (--before)",
    }
    lines = [
        "## 8. DB routes, CPU per request in-process (`--only dbroute`)",
        "",
        f"{n} ASGI requests per route, one after another, best of {reps}, {rounds} interleaved rounds; each variant "
        "in its own process (benchmarks/db_route.py). Ratio = bare's CPU per request / the variant's: the throughput "
        "ratio a saturated core would show without uvicorn's own share (which brings a real server's ratio closer to "
        "1). Other load only ever adds CPU time, so the best round is the cleanest figure; the per-round ratios show "
        "the spread.",
        "",
        "| variant | " + " | ".join(f"{r} CPU µs/req: best (rounds)" for r in routes) + " |",
        "|---|" + "---|" * len(routes),
    ]
    for name in variants:
        cells = [f"{min(table[(name, r)]):.1f} ({', '.join(f'{v:.0f}' for v in table[(name, r)])})" for r in routes]
        lines.append(f"| {labels[name]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| ratio: best rounds; per round median (range) | " + " | ".join(routes) + " |",
        "|---|" + "---|" * len(routes),
    ]
    for name in variants:
        if name == "bare":
            continue
        cells = []
        for r in routes:
            best = min(table[("bare", r)]) / min(table[(name, r)])
            ratios = [b / v for b, v in zip(table[("bare", r)], table[(name, r)], strict=True)]
            cells.append(f"{best:.2f}; {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
        lines.append(f"| {name} / bare | " + " | ".join(cells) + " |")
    return [*lines, ""]


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    print(json.dumps(child(sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4]))))
