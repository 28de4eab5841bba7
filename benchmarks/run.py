"""Side-by-side benchmarks; rewrites benchmarks/RESULTS.md.

Figure 1 (throughput): the same app (benchmarks/apps/bench_app.py) under each variant, on each route, with
wrk on loopback. Every variant's app is started once and pinned to one CPU (wrk to another); cells run one at a
time while the other apps are stopped, variants round-robin within each round, so machine drift hits them alike;
every ratio is computed within one round (variant / baseline of that same round) and then summarised as median
and spread. Figure 1b (pairs): each variant and a bare app loaded at the same moment on the same CPU, which the
kernel splits evenly between them: their req/s ratio is their cost ratio under identical conditions. Figure 1c
(gc): the garbage collector's time per request in each variant's app, timed inside it (``BENCH_GC=1``).
Figure 12 (startup): ``opentelemetry-instrument python -c ...`` with ours and with upstream's distro
(benchmarks/startup.py).

    python benchmarks/run.py [--rounds 3] [--duration 5] [--quick] [--only throughput,pairs,gc,...]
                             [--variants bare,ours,...] [--routes /trivial,/db/pg] [--before SRC]

Everything listens on 127.0.0.1 and stops by itself. ``--quick`` (used by the smoke test) runs one tiny round.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_reliability.config import HEALTH_CACHE  # noqa: E402
from tests.support import AppProcess, OtlpReceiver, start_app, start_postgres, upstream_distro_dir  # noqa: E402

APP_DIR = ROOT / "benchmarks" / "apps"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
OURS = (
    "reliability_breakers",
    "reliability_pool",
    "reliability_process",
    "reliability_operations",
    "reliability_statements",
)


@dataclass
class Variant:
    name: str
    label: str
    env: dict[str, str]
    instrument: bool = True


@dataclass
class Measurement:
    rps: float
    p99_ms: float
    wrk_cpu: float  # CPU seconds wrk used per second of run: near 1.0 would mean wrk is the bottleneck
    app_cpu_us: float = 0.0  # CPU µs the app process spent per request: robust to a busy machine, unlike rps
    requests: int = 0  # requests served in the run


@dataclass
class Table:
    rows: dict[tuple[str, str], list[Measurement]] = field(default_factory=dict)


def variants(otlp_endpoint: str, before: Path | None = None) -> list[Variant]:
    upstream = upstream_distro_dir()
    same_signals = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
    }
    upstream_env = {
        "PYTHONPATH": str(upstream),
        "OTEL_PYTHON_DISTRO": "distro",
        "OTEL_PYTHON_CONFIGURATOR": "configurator",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ",".join((*OURS, "reliability_health", "reliability_http")),
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_LOGS_EXPORTER": "none",
    }
    traced = {  # every request traced (the SDK's default sampler, parentbased_always_on), spans to the receiver
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_endpoint + "/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    tenth = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    return [
        Variant("bare", "bare FastAPI (no instrumentation)", {}, instrument=False),
        Variant("seed", "seed's BaseHTTPMiddleware error tracking", {"BENCH_SEED_MIDDLEWARE": "1"}, instrument=False),
        Variant(
            "upstream",
            "upstream opentelemetry-instrument + opentelemetry-distro (prometheus metrics, no traces export)",
            {**same_signals, **upstream_env},
        ),
        Variant(
            "ours_contrib",
            "ours with the contrib HTTP layer (OTEL_RELIABILITY_HTTP_LAYER=contrib: the default before the lean layer)",
            {"OTEL_RELIABILITY_HTTP_LAYER": "contrib"},
        ),
        Variant(
            "native",
            "ours with FastAPI's native telemetry layer (OTEL_RELIABILITY_HTTP_LAYER=native)",
            {"OTEL_RELIABILITY_HTTP_LAYER": "native"},
        ),
        Variant(
            "ours_off",
            "ours, own instrumentors disabled: the lean HTTP layer alone (OTEL_PYTHON_DISABLED_INSTRUMENTATIONS)",
            {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ",".join(OURS)},
        ),
        Variant("ours", "ours, defaults (lean HTTP layer: spans not exported)", {}),
        *(
            [
                Variant(
                    "ours_before", f"ours, defaults, the code of {before.name} (--before)", {"PYTHONPATH": str(before)}
                )
            ]
            if before
            else []
        ),
        Variant("ours_otlp", "ours, every request traced, spans exported by OTLP/HTTP", traced),
        Variant("ours_otlp10", "ours, parentbased_traceidratio 0.1, spans exported by OTLP/HTTP", {**traced, **tenth}),
        # Diagnostics for issue 25 (not in make bench's figures): the exporter configured, no request sampled.
        Variant(
            "ours_otlp_off",
            "ours, OTLP exporter, sampler always_off (no span path)",
            {**traced, "OTEL_TRACES_SAMPLER": "always_off"},
        ),
        Variant(
            "ours_otlp0",
            "ours, OTLP exporter, parentbased_traceidratio 0 (every request unsampled)",
            {**traced, **tenth, "OTEL_TRACES_SAMPLER_ARG": "0"},
        ),
        *(
            [
                Variant(
                    "ours_otlp_before",
                    f"ours, every request traced, spans exported by OTLP/HTTP, the code of {before.name} (--before)",
                    {**traced, "PYTHONPATH": str(before)},
                ),
                Variant(
                    "ours_otlp10_before",
                    f"ours, parentbased_traceidratio 0.1, spans exported by OTLP/HTTP, the code of {before.name} "
                    "(--before)",
                    {**traced, **tenth, "PYTHONPATH": str(before)},
                ),
            ]
            if before
            else []
        ),
        Variant(
            "upstream_otlp",
            "upstream opentelemetry-instrument + opentelemetry-distro, every request traced, spans exported by "
            "OTLP/HTTP (prometheus metrics)",
            {**upstream_env, **traced},
        ),
        Variant(
            "upstream_otlp10",
            "upstream, parentbased_traceidratio 0.1, spans exported by OTLP/HTTP (prometheus metrics)",
            {**upstream_env, **traced, **tenth},
        ),
    ]


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_P99 = re.compile(r"99%\s+([\d.]+)(us|ms|s)\b")


def _cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


PIN = True  # --no-pin: let the scheduler place apps and wrk (a real deployment's regime)


def _cpus() -> tuple[list[str], list[str]]:
    """The CPU wrk runs on and the CPU every app runs on (``taskset`` prefixes), when there are two or more: an
    app's worker then never migrates and never shares its core with the load generator, so a cell measures the
    app, not the scheduler. One CPU, or ``--no-pin``: no pinning. Pinned, an app's threads also stop handing the
    interpreter lock from core to core: unpinned on 2 cores, the bare app spent about twice the CPU per request
    (`/db/sqlite`: ~960 against ~420 µs), and every µs of ours weighs more there."""
    cpus = sorted(os.sched_getaffinity(0))
    if not PIN or len(cpus) < 2 or shutil.which("taskset") is None:
        return [], []
    return ["taskset", "-c", str(cpus[0])], ["taskset", "-a", "-p", "-c", str(cpus[-1])]


def wrk(url: str, duration: float, connections: int = 32, pid: int | None = None) -> Measurement:
    started = time.monotonic()
    before = os.times()
    app_before = _cpu_seconds(pid)
    proc = subprocess.run(
        [*_cpus()[0], "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    )
    after = os.times()
    app_cpu = _cpu_seconds(pid) - app_before
    elapsed = time.monotonic() - started
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    rps = float(_RPS.search(proc.stdout).group(1))  # type: ignore[union-attr]
    p99_match = _P99.search(proc.stdout)
    p99 = float(p99_match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99_match.group(2)] if p99_match else 0.0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", proc.stdout)
    if non_2xx:
        raise RuntimeError(f"{url}: {non_2xx.group(1)} failed responses")
    served = re.search(r"(\d+) requests in", proc.stdout)
    count = int(served.group(1)) if served else 0
    per_request = app_cpu / count * 1e6 if count else 0.0
    return Measurement(rps, p99, cpu / elapsed, per_request, count)


def _pause(app: AppProcess, paused: bool) -> None:
    """Stop (SIGSTOP) or resume (SIGCONT) an app's process group: only the app being measured runs, so the
    others' background threads (collections, publishers) take nothing from it."""
    os.killpg(app.proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)


def throughput(args: argparse.Namespace) -> list[str]:
    """Every variant's app is started once and pinned to the same CPU (wrk on another); then, round after round,
    each (route, variant) cell runs while the other apps are stopped. Variants alternate order from round to
    round, so a variant is never always first or last; a round's cells for one route run seconds apart, so the
    per-round ratios see the same machine."""
    table = Table()
    apps: dict[str, AppProcess] = {}
    with _bench_setup(args, ["/trivial", "/db/sqlite", "/breaker"]) as bench, _stopping(apps):
        wanted = _wanted(bench.variants, args, default=list(bench.variants), quick=["bare", "ours"])
        chosen = [v for v in bench.variants.values() if v.name in wanted]
        routes = bench.routes
        _start_paused(chosen, bench.base_env, routes, args.duration, apps)
        for round_no, route, name in _cells([v.name for v in chosen], routes, args.rounds):
            m, _, _ = _measure_alone(apps[name], route, args.duration)
            table.rows.setdefault((name, route), []).append(m)
            print(f"round {round_no + 1} {name:10s} {route:11s} {m.rps:8.0f} req/s "
                  f"p99 {m.p99_ms:6.1f} ms app {m.app_cpu_us:6.0f} µs/req (wrk cpu {m.wrk_cpu:.2f})",
                  flush=True)  # fmt: skip
    return render_throughput(table, chosen, routes, args)


@dataclass
class _Bench:
    variants: dict[str, Variant]  # every variant, by name
    routes: list[str]  # the routes to measure (--routes applied; /db/pg when PostgreSQL runs)
    base_env: dict[str, str]  # every app's environment, before its variant's own


@contextlib.contextmanager
def _bench_setup(
    args: argparse.Namespace, routes: list[str], extra_env: dict[str, str] | None = None
) -> Iterator[_Bench]:
    """What the wrk figures (1, 1b, 1c) run against: an OTLP receiver (for ``ours_otlp``) and, unless --quick, a
    PostgreSQL; both stopped on the way out, whatever happens in between."""
    receiver = OtlpReceiver(keep=False)  # counts what it receives; a run of minutes would not fit in memory
    pg = None
    try:
        pg = start_postgres() if not args.quick else None
        routes = routes + (["/db/pg"] if pg else [])
        if args.routes:
            routes = [r for r in routes if r in args.routes.split(",")]
        base_env = {
            "BENCH_SQLITE_URL": "sqlite:////tmp/otel-reliability-bench.db",
            "OTEL_RELIABILITY_HEALTH_CACHE": HEALTH_CACHE.default,  # what a user runs (the test default is 0)
            **(extra_env or {}),
        }
        if pg:
            base_env["BENCH_PG_URL"] = pg.url("psycopg")
        yield _Bench({v.name: v for v in variants(receiver.endpoint, args.before)}, routes, base_env)
    finally:
        receiver.close()
        if pg:
            pg.stop("immediate")


def _wanted(every: dict[str, Variant], args: argparse.Namespace, default: list[str], quick: list[str]) -> list[str]:
    """The variants a figure runs: ``quick`` with --quick, else --variants, else ``default``."""
    wanted = quick if args.quick else (args.variants.split(",") if args.variants else default)
    unknown = sorted(set(wanted) - set(every))
    if unknown:
        raise SystemExit(f"benchmarks: unknown variant(s) {', '.join(unknown)}")
    return wanted


def _start_pinned(variant: Variant, base_env: dict[str, str]) -> AppProcess:
    """The bench app under ``variant``, pinned to the apps' CPU (when there are two or more)."""
    app = start_app(
        "bench_app:app",
        app_dir=APP_DIR,
        env={**base_env, **variant.env},
        instrument=variant.instrument,
        wait_path="/trivial",
    )
    pin = _cpus()[1]
    if pin:
        subprocess.run([*pin, str(app.proc.pid)], capture_output=True, check=True)
    return app


def _start_paused(
    chosen: list[Variant], base_env: dict[str, str], routes: list[str], duration: float, apps: dict[str, AppProcess]
) -> None:
    """Start every variant's app once (into ``apps``, which the caller stops), pinned to the apps' CPU, warmed up
    on every route, then stopped (SIGSTOP) until its cells run."""
    for variant in chosen:
        apps[variant.name] = app = _start_pinned(variant, base_env)
        for route in routes:
            wrk(app.url + route, min(1.0, duration))  # warm-up: imports, first connections, caches
        _pause(app, True)


def _cells(names: list[str], routes: list[str], rounds: int) -> Iterator[tuple[int, str, str]]:
    """(round, route, variant) in the order cells run: round after round, route after route, the variants in
    alternating order from round to round, so that none is always first or last and a round's cells for one
    route run seconds apart."""
    for round_no in range(rounds):
        for route in routes:
            for name in names if round_no % 2 == 0 else names[::-1]:
                yield round_no, route, name


def _measure_alone(
    app: AppProcess, route: str, duration: float, probe: Callable[[AppProcess], Any] = lambda app: None
) -> tuple[Measurement, Any, Any]:
    """One cell: the app resumed alone, warmed up again, loaded by wrk, stopped again; ``probe`` (read just
    before and just after the load) is returned with the measurement."""
    _pause(app, False)
    try:
        wrk(app.url + route, min(1.0, duration))  # warm-up after the pause
        before = probe(app)
        measured = wrk(app.url + route, duration, pid=app.proc.pid)
        return measured, before, probe(app)
    finally:
        _pause(app, True)


@contextlib.contextmanager
def _stopping(apps: dict[str, AppProcess]) -> Iterator[None]:
    """Every app put in ``apps`` meanwhile is resumed (it may be SIGSTOPped) and stopped on the way out."""
    try:
        yield
    finally:
        for app in apps.values():
            _pause(app, False)
            app.stop()


def _autogroups() -> bool:
    """Whether the kernel splits a CPU fairly between sessions (each app is started in its own session)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def _loaded_together(
    apps: dict[str, AppProcess], route: str, seconds: int, client: list[str], reverse: bool = False
) -> tuple[dict[str, float], dict[str, float]]:
    """One wrk per app, all started together (in reverse order if asked, so that no app is always loaded first):
    each app's req/s and CPU seconds per request."""
    cpu_before = {n: _cpu_seconds(a.proc.pid) for n, a in apps.items()}
    order = list(apps.items())[:: -1 if reverse else 1]
    loads = {
        n: subprocess.Popen(
            [*client, "wrk", "-t1", "-c32", f"-d{seconds}s", a.url + route], stdout=subprocess.PIPE, text=True
        )
        for n, a in order
    }
    outputs = {n: w.communicate(timeout=seconds + 60)[0] for n, w in loads.items()}
    rps: dict[str, float] = {}
    per_request: dict[str, float] = {}
    for n, out in outputs.items():
        rate, served = _RPS.search(out), re.search(r"(\d+) requests in", out)
        if rate is None or served is None or "Non-2xx" in out:
            raise RuntimeError(f"{route} on {n}: wrk failed: {out[-500:]}")
        rps[n] = float(rate.group(1))
        per_request[n] = (_cpu_seconds(apps[n].proc.pid) - cpu_before[n]) / int(served.group(1))
    return rps, per_request


def paired(args: argparse.Namespace) -> list[str]:
    """Figure 1b: each variant against bare at the same moment. Both apps run at once on the same pinned CPU,
    each loaded by its own wrk (on another CPU) for the same seconds; the kernel gives each session half the
    CPU (autogroup), so the ratio of their req/s is the ratio of their costs per request, measured under the
    same machine conditions. On a machine whose speed drifts by tens of percent within seconds (a shared
    VM), this resolves a few percent where consecutive cells cannot. A pair of two bare apps shows the
    method's own bias and spread."""
    client, pin = _cpus()
    seconds = max(1, round(args.duration))
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with _bench_setup(args, ["/trivial", "/db/sqlite"]) as bench:
        every, routes = bench.variants, bench.routes
        every["bare2"] = Variant("bare2", "a second bare app (the method's own bias)", {}, instrument=False)
        traced = ["ours_otlp", "ours_otlp10", "upstream_otlp", "upstream_otlp10"]  # issue 25
        wanted = [
            w for w in _wanted(every, args, default=["bare2", "ours", *traced], quick=["bare2", "ours"]) if w != "bare"
        ]
        for name in wanted:
            for first in (name, "bare"):  # each start order once: the app started second gets an edge
                pair: dict[str, AppProcess] = {}
                try:
                    for variant in (every[first], every["bare" if first == name else name]):
                        pair[variant.name] = _start_pinned(variant, bench.base_env)
                    for route in routes:
                        for round_no in range(args.rounds + 1):  # the first round warms both up
                            rps, per_request = _loaded_together(pair, route, seconds, client, round_no % 2 == 1)
                            if round_no == 0:
                                continue
                            ratio = (rps[name] / rps["bare"], per_request["bare"] / per_request[name])
                            results.setdefault((name, route), []).append(ratio)
                            print(f"pair {name} ({first} started first) {route} round {round_no}: bare "
                                  f"{rps['bare']:.0f} req/s, {name} {rps[name]:.0f} req/s: {ratio[0]:.3f} "
                                  f"(CPU {ratio[1]:.3f})", flush=True)  # fmt: skip
                finally:
                    for app in pair.values():
                        app.stop()
    lines = [
        "## 1b. Side by side at the same moment (`--only pairs`)",
        "",
        "Each variant paired with a bare app: both running at once, "
        + ("pinned to one CPU, " if pin else "not pinned (`--no-pin`), ")
        + f"each loaded by its own `wrk -t1 -c32 -d{seconds}s`"
        + (" on another CPU" if pin else "")
        + f", 2 x {args.rounds} rounds per route (each start order) "
        "after a warm-up round. "
        + (
            "The kernel splits the CPU evenly between the two apps (autogroup: each is its own session), so the "
            "ratio of their req/s is the inverse ratio of their costs per request, under the same machine "
            "conditions. The app started second gets an edge of a few percent (seen in a bare / bare pair), so "
            "each pair is started twice, once in each order, with the same number of rounds. "
            if _autogroups()
            else "WARNING: sched_autogroup is off: the CPU is split per thread, not per app; the ratios are biased. "
        )
        + "Cells: median ratio of req/s (range), then the CPU-per-request ratio (bare's µs / the variant's).",
        "",
        "| variant / bare, same moment | " + " | ".join(routes) + " | target |",
        "|---|" + "---|" * len(routes) + "---|",
    ]
    targets = {
        "ours": ">= 0.85 trivial, >= 0.90 DB routes (issue 17)",
        "bare2": "1.00: the method's own bias",
        "ours_otlp": ">= 0.70 trivial, >= 0.75 DB routes (issue 25)",
        "ours_otlp10": ">= 0.90 (issue 25)",
    }
    for name in wanted:
        cells = []
        for route in routes:
            got = results[(name, route)]
            req = [r for r, _ in got]
            cpu_ratio = [c for _, c in got]
            cells.append(
                f"{statistics.median(req):.3f} ({min(req):.2f}-{max(req):.2f}); CPU {statistics.median(cpu_ratio):.3f}"
            )
        lines.append(f"| {every[name].label} | " + " | ".join(cells) + f" | {targets.get(name, '')} |")
    lines.append("")
    return lines


def _collector(app: AppProcess) -> dict[str, Any]:
    with urllib.request.urlopen(app.url + "/_bench/gc", timeout=30) as response:
        return json.load(response)  # type: ignore[no-any-return]


def collector(args: argparse.Namespace) -> list[str]:
    """Figure 1c: what the garbage collector costs each request, bare and instrumented. The bench app times every
    collection (``BENCH_GC=1``: ``gc.callbacks``); each variant's app is started once and pinned, and runs alone
    (the others stopped) while wrk loads it, as in figure 1. A full collection walks every tracked object, and
    the SDK, the instrumentation and their modules add objects to walk: a cost per request that no hook shows."""
    apps: dict[str, AppProcess] = {}
    # Per (variant, route): one row per round of (app CPU µs, collector µs, full-collection µs, full collections,
    # requests, tracked objects).
    rows: dict[tuple[str, str], list[tuple[float, float, float, int, int, int]]] = {}
    with _bench_setup(args, ["/trivial", "/db/sqlite"], {"BENCH_GC": "1"}) as bench, _stopping(apps):
        every, routes = bench.variants, bench.routes
        wanted = _wanted(every, args, default=["bare", "ours_off", "ours"], quick=["bare", "ours"])
        _start_paused([every[name] for name in wanted], bench.base_env, routes, args.duration, apps)
        for round_no, route, name in _cells(wanted, routes, args.rounds):
            m, before, after = _measure_alone(apps[name], route, args.duration, _collector)
            n = max(m.requests, 1)
            spent = sum(after["seconds"]) - sum(before["seconds"])
            full = after["seconds"][2] - before["seconds"][2]
            fulls = after["collections"][2] - before["collections"][2]
            rows.setdefault((name, route), []).append(
                (m.app_cpu_us, spent / n * 1e6, full / n * 1e6, fulls, n, after["tracked"])
            )
            print(f"round {round_no + 1} {name:10s} {route:11s} app {m.app_cpu_us:6.0f} µs/req, collector "
                  f"{spent / n * 1e6:5.1f} µs/req ({fulls} full collections), {after['tracked']} tracked",
                  flush=True)  # fmt: skip
    lines = [
        "## 1c. The garbage collector's share (`--only gc`)",
        "",
        f"The bench app with `BENCH_GC=1` times every collection (`gc.callbacks`). wrk -t1 -c32 -d{args.duration}s "
        f"per cell after a warm-up, {args.rounds} rounds, apps pinned and measured one at a time as in figure 1. "
        "Cells: median over rounds (range). A full collection walks every tracked object; the objects an "
        "instrumented process adds (the SDK, the exporter, the instrumentation and their modules) make each one "
        "longer, a per-request cost that no hook's own timing shows.",
        "",
        "| variant | route | app CPU µs/req | collector µs/req | collector share of app CPU | of which full "
        "collections µs/req | full collections per 10k req | ms per full collection | tracked objects |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in wanted:
        for route in routes:
            got = rows[(name, route)]
            gc_us = [r[1] for r in got]
            share = [r[1] / r[0] for r in got if r[0]]
            fulls, served = sum(r[3] for r in got), sum(r[4] for r in got)
            per_full = f"{sum(r[2] * r[4] for r in got) / fulls / 1e3:.1f}" if fulls else "-"
            lines.append(
                f"| {every[name].label} | {route} | {statistics.median(r[0] for r in got):.0f} | "
                f"{statistics.median(gc_us):.1f} ({min(gc_us):.1f}-{max(gc_us):.1f}) | "
                f"{statistics.median(share):.1%} ({min(share):.1%}-{max(share):.1%}) | "
                f"{statistics.median(r[2] for r in got):.1f} | {fulls / served * 1e4:.1f} | {per_full} | "
                f"{statistics.median(r[5] for r in got):.0f} |"
            )
    if "bare" in wanted:
        lines.append("")
        for name in (n for n in wanted if n != "bare"):
            parts = []
            for route in routes:
                extra = statistics.median(r[1] for r in rows[(name, route)]) - statistics.median(
                    r[1] for r in rows[("bare", route)]
                )
                bare_cpu = statistics.median(r[0] for r in rows[("bare", route)])
                parts.append(f"{route} {extra:+.1f} µs ({extra / bare_cpu:+.1%} of bare's CPU per request)")
            lines.append(f"- {name}: collector time per request against bare: " + "; ".join(parts) + ".")
    return [*lines, ""]


def _ratio(table: Table, a: str, b: str, route: str) -> list[float]:
    return [x.rps / y.rps for x, y in zip(table.rows[(a, route)], table.rows[(b, route)], strict=True)]


def _cpu_ratio(table: Table, a: str, b: str, route: str) -> list[float]:
    """b's CPU per request over a's: > 1 when a is cheaper. Computed per round like the req/s ratio."""
    pairs = zip(table.rows[(a, route)], table.rows[(b, route)], strict=True)
    return [y.app_cpu_us / x.app_cpu_us if x.app_cpu_us else 0.0 for x, y in pairs]


def _fmt(values: list[float], digits: int = 0) -> str:
    med = statistics.median(values)
    spread = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    return f"{med:.{digits}f} ± {spread:.{digits}f}"


def render_throughput(table: Table, chosen: list[Variant], routes: list[str], args: argparse.Namespace) -> list[str]:
    lines = [
        "## 1. Throughput and p99 latency",
        "",
        f"wrk -t1 -c32 -d{args.duration}s per cell after a warm-up, {args.rounds} rounds, uvicorn 1 worker. "
        + "Every variant's app started once, "
        + ("all pinned to one CPU and wrk to another; " if _cpus()[1] else "nothing pinned (`--no-pin` or one CPU); ")
        + "only the app being measured runs (the others are SIGSTOPped), variants in alternating order from round "
        "to round. "
        + "Cells: median ± half the range over rounds. Ratios are computed within each round, then summarised.",
        "",
        "| variant | " + " | ".join(f"{r} req/s | {r} p99 ms | {r} app CPU µs/req" for r in routes) + " |",
        "|---|" + "---|---|---|" * len(routes),
    ]
    for v in chosen:
        cells = []
        for r in routes:
            ms = table.rows[(v.name, r)]
            cells += [_fmt([m.rps for m in ms]), _fmt([m.p99_ms for m in ms], 1), _fmt([m.app_cpu_us for m in ms])]
        lines.append(f"| {v.label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Two ratios per pair: req/s (what a user sees, but on a busy machine it also measures who else had the "
        "CPU during that cell), then app CPU per request inverted (b's µs / a's µs: the throughput ratio a "
        "saturated, otherwise idle core would show; robust to other load).",
        "",
        "| ratio (per round): req/s; CPU-equivalent | " + " | ".join(routes) + " | target |",
        "|---|" + "---|" * len(routes) + "---|",
    ]
    names = {v.name for v in chosen}
    pairs = [
        ("ours", "bare", ">= 0.85 trivial, >= 0.90 DB routes (issue 17)"),
        ("ours_off", "bare", "(the lean HTTP layer alone vs bare)"),
        ("ours", "ours_contrib", "(lean vs the contrib layer, everything else equal)"),
        ("ours_contrib", "bare", "(the default before the lean layer)"),
        ("native", "bare", "(FastAPI's native layer vs bare)"),
        ("ours", "upstream", ">= 1.00 on every route"),
        ("ours", "seed", "(where we stand vs the seed's middleware)"),
        ("ours", "ours_off", ">= 0.97 (our instrumentors cost <= 3%)"),
        ("ours_before", "bare", "(the --before code vs bare)"),
        ("ours", "ours_before", "(this code vs the --before code)"),
        ("ours_otlp", "ours_contrib", "(cost of exporting traces, same contrib layer)"),
        ("upstream", "bare", "(upstream's cost)"),
    ]
    for a, b, target in pairs:
        if a in names and b in names:
            cells = [f"{_fmt(_ratio(table, a, b, r), 2)}; {_fmt(_cpu_ratio(table, a, b, r), 2)}" for r in routes]
            lines.append(f"| {a} / {b} | " + " | ".join(cells) + f" | {target} |")
    wrk_cpu = max(m.wrk_cpu for ms in table.rows.values() for m in ms)
    verdict = (
        f"wrk's own CPU use peaked at {wrk_cpu:.2f} core: not the bottleneck (the app's one worker saturates a core)."
        if wrk_cpu < 0.9
        else f"WARNING: wrk used {wrk_cpu:.2f} core and may be the bottleneck."
    )
    lines += ["", verdict, ""]
    return lines


HEALTH_TOKEN = "bench-health-token"
HEALTH_PATHS = (
    "/api/health",
    "/api/health/circuit-breakers",
    "/api/health/error-rate",
    "/api/health/pool",
    "/api/health/resources",
    "/api/health/db-timeout",
)


def latency_ms(url: str, n: int) -> tuple[float, float]:
    """p50 and p99 of ``n`` sequential GETs on one keep-alive connection."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    samples = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            conn.request("GET", parts.path, headers={"Authorization": f"Bearer {HEALTH_TOKEN}"})
            resp = conn.getresponse()
            resp.read()
            samples.append((time.perf_counter() - started) * 1000)
            if resp.status >= 500 and resp.status != 503:
                raise RuntimeError(f"{url}: {resp.status}")
    finally:
        conn.close()
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def serve_requests(app_url: str, count: int) -> None:
    """Serve about ``count`` requests (wrk, in chunks), a tenth of them 404s, so the error window is not empty."""
    served = 0
    while served < count:
        out = subprocess.run(
            ["wrk", "-t1", "-c16", "-d3s", app_url + "/trivial"], capture_output=True, text=True, check=True
        ).stdout
        served += int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        subprocess.run(["wrk", "-t1", "-c4", "-d1s", app_url + "/missing"], capture_output=True, check=True)


def health(args: argparse.Namespace) -> list[str]:
    configs = [(10, 1), (100, 10), (1000, 10)] if not args.quick else [(10, 1)]
    samples = 50 if args.quick else 300
    traffic = 2_000 if args.quick else 100_000
    lines = [
        "## 2. Health endpoints",
        "",
        f"p50 / p99 in ms of {samples} sequential GETs per endpoint (keep-alive, health token), with N idle "
        f"pybreaker breakers and M SQLite pools, before and after {traffic:,} requests were served, with the "
        f"default OTEL_RELIABILITY_HEALTH_CACHE={HEALTH_CACHE.default} s. "
        "Target: p99 < 5 ms with 100 breakers and 10 pools, flat with traffic.",
        "",
        "| breakers, pools | requests served | " + " | ".join(HEALTH_PATHS) + " |",
        "|---|---|" + "---|" * len(HEALTH_PATHS),
    ]
    for breakers, pools in configs:
        app = start_app(
            "bench_app:app",
            app_dir=APP_DIR,
            env={
                "BENCH_BREAKERS": str(breakers),
                "BENCH_POOLS": str(pools),
                "OTEL_RELIABILITY_HEALTH_TOKEN": HEALTH_TOKEN,
                # the product's default (the test harness sets 0 for fresh reads)
                "OTEL_RELIABILITY_HEALTH_CACHE": HEALTH_CACHE.default,
            },
            wait_path="/trivial",
        )
        try:
            for served in (0, traffic):
                if served:
                    serve_requests(app.url, served)
                # No scrape first: health must show every breaker and pool by itself (fresh readings).
                cells = []
                for path in HEALTH_PATHS:
                    latency_ms(app.url + path, 20)  # warm-up
                    p50, p99 = latency_ms(app.url + path, samples)
                    cells.append(f"{p50:.2f} / {p99:.2f}")
                lines.append(f"| {breakers}, {pools} | {served:,} | " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
        finally:
            app.stop()
    return [*lines, ""]


def memory(args: argparse.Namespace) -> list[str]:
    import psutil

    first, second = (2_000, 6_000) if args.quick else (10_000, 200_000)
    app = start_app("bench_app:app", app_dir=APP_DIR, env={}, wait_path="/trivial")
    try:
        proc = psutil.Process(app.proc.pid)
        serve_requests(app.url, first)
        rss_first = proc.memory_info().rss
        serve_requests(app.url, second - first)
        rss_second = proc.memory_info().rss
    finally:
        app.stop()
    growth = (rss_second - rss_first) / 2**20
    verdict = "met" if growth < 5 else "MISSED"
    return [
        "## 4. Memory",
        "",
        f"RSS of the app (ours, defaults) after {first:,} requests: {rss_first / 2**20:.1f} MiB; after {second:,}: "
        f"{rss_second / 2**20:.1f} MiB; growth {growth:+.1f} MiB (target < 5 MiB: {verdict}). A tenth of the "
        "requests are 404s, so the error window holds errors all along.",
        "",
    ]


def collection(args: argparse.Namespace) -> list[str]:
    from benchmarks import micro

    return micro.collection(args.quick)


def per_call(args: argparse.Namespace) -> list[str]:
    from benchmarks import micro

    pg = None if args.quick else start_postgres()
    try:
        return micro.per_call(1 if args.quick else args.rounds, args.quick, pg.url("psycopg") if pg else None)
    finally:
        if pg:
            pg.stop("immediate")


def statements(args: argparse.Namespace) -> list[str]:
    from benchmarks import micro

    pg = None if args.quick else start_postgres()
    try:
        return micro.statements(1 if args.quick else args.rounds, args.quick, pg.url("psycopg") if pg else None)
    finally:
        if pg:
            pg.stop("immediate")


def layer(args: argparse.Namespace) -> list[str]:
    from benchmarks import http_layer

    return http_layer.figure(args.quick)


def db_route(args: argparse.Namespace) -> list[str]:
    from benchmarks import db_route as figure8

    pg = None if args.quick else start_postgres()
    try:
        return figure8.figure(
            1 if args.quick else args.rounds, args.quick, pg.url("psycopg") if pg else None, args.before
        )
    finally:
        if pg:
            pg.stop("immediate")


def startup(args: argparse.Namespace) -> list[str]:
    from benchmarks import startup as figure11

    return figure11.figure(args.rounds, args.quick)


FIGURES: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "throughput": throughput,
    "pairs": paired,
    "gc": collector,
    "health": health,
    "collection": collection,
    "memory": memory,
    "percall": per_call,
    "statements": statements,
    "layer": layer,
    "dbroute": db_route,
    "startup": startup,
}


def machine() -> list[str]:
    versions = ", ".join(
        f"{p} {metadata.version(p)}"
        for p in ("opentelemetry-sdk", "opentelemetry-instrumentation", "fastapi", "uvicorn", "sqlalchemy", "pybreaker")
    )
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return [
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {os.cpu_count()} cores ({cpu}), "
        f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}.",
        f"Packages: {versions}.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="one tiny round (smoke test)")
    parser.add_argument("--only", default=",".join(FIGURES))
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--variants", default="", help="throughput: only these variants (comma-separated names)")
    parser.add_argument("--routes", default="", help="throughput: only these routes (comma-separated paths)")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="throughput and dbroute: add the variant ours_before, our defaults with the package from this source "
        "tree first on PYTHONPATH (e.g. `git archive main | tar -x -C /tmp/before`): before -> after in one run",
    )
    parser.add_argument("--no-pin", action="store_true", help="throughput and pairs: pin nothing to a CPU")
    args = parser.parse_args(argv)
    global PIN
    PIN = not args.no_pin
    if args.quick:
        args.rounds, args.duration = 1, 1.0
    if shutil.which("wrk") is None:
        print("benchmarks: wrk is missing (apt-get install wrk)", file=sys.stderr)
        return 2
    lines = ["# Benchmark results", "", *machine()]
    for name in args.only.split(","):
        lines += FIGURES[name](args)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
