"""The fault suite: each fault against real parts under load, one row of figures each; rewrites benchmarks/FAULTS.md.

    python benchmarks/faults.py [--only pg_outage,collector_outage] [--quick] [--output PATH]

Every fault is a function returning a ``Row`` (figures, the bar it must meet, whether it met it). The full
durations are the issue's (PostgreSQL stopped 5 s, collector down 15 s, 20 s of flapping, a 10-minute soak);
``tests/test_faults_*.py`` call the same functions with short durations so that ``make test`` keeps the line.
Everything listens on 127.0.0.1 and stops by itself. ``--quick`` runs the short versions and writes nothing
unless ``--output`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    BIN,
    AppProcess,
    Postgres,
    ensure_collector,
    free_port,
    http,
    scrape,
    start_app,
    start_postgres,
    wait_until,
)

APP_DIR = ROOT / "tests" / "apps" / "faults"
FAULTS_MD = ROOT / "benchmarks" / "FAULTS.md"
HEALTH_TOKEN = "faults-health-token-0123456789"
ADMIN_TOKEN = "faults-admin-token-0123456789"
PING_COUNT = "http_server_request_duration_seconds_count"


@dataclass
class Row:
    """One fault's figures; ``-`` where a figure does not apply."""

    fault: str
    bar: str
    ok: bool = False
    served: int | None = None
    failed: int | None = None
    health: str = "-"
    recovered: str = "-"
    log_lines: str = "-"
    lost: str = "-"
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        requests = "-" if self.served is None else f"{self.served} / {self.failed or 0}"
        met = "yes" if self.ok else "**no**"
        return [self.fault, requests, self.health, self.recovered, self.log_lines, self.lost, self.bar, met,
                "; ".join(self.notes)]  # fmt: skip


HEADER = ["fault", "requests served / failed", "health answers (worst)", "recovered in", "log lines", "lost",
          "bar", "met", "notes"]  # fmt: skip


# --- load and observation ----------------------------------------------------------------------------------------
@dataclass
class Result:
    at: float
    path: str
    status: int  # 0: no answer (refused, timeout)
    seconds: float
    body: bytes = b""


class Load:
    """Requests at a steady rate from a few threads until stopped; every result is kept with its time."""

    def __init__(self, base: str, pick: Callable[[int], tuple[str, str]], rate: float, threads: int = 4) -> None:
        self.base, self.pick, self.interval, self.threads = base, pick, threads / rate, threads
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            method, path = self.pick(i)
            started = time.monotonic()
            try:
                status, _, body = http(method, self.base + path, timeout=10)
            except Exception:
                status, body = 0, b""
            seconds = time.monotonic() - started
            with self._lock:
                self.results.append(Result(started, path, status, seconds, body))
            i += self.threads
            self._stop.wait(max(0.0, self.interval - seconds))

    def __enter__(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)

    def ok(self, path_prefix: str = "") -> list[Result]:
        return [r for r in self.results if r.path.startswith(path_prefix) and 200 <= r.status < 300]

    def bad(self, path_prefix: str = "") -> list[Result]:
        return [r for r in self.results if r.path.startswith(path_prefix) and not 200 <= r.status < 300]


ORDER = {"healthy": 0, "degraded": 1, "unhealthy": 2}
WINDOWED = {"error-rate"}  # a 5-minute window by design: it stays degraded after an outage, whatever recovered


def health_status(result: Result) -> str | None:
    """The status of a health answer as the dependencies stand *now*: the worst of its checks except the
    windowed ones; None when the answer was not JSON with checks."""
    try:
        checks = json.loads(result.body)["checks"]
        statuses = [str(c["status"]) for name, c in checks.items() if name not in WINDOWED]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return max(statuses, key=lambda s: ORDER.get(s, 2), default="healthy")


def _unhealthy_checks(answers: list[Result]) -> set[str]:
    names = set()
    for result in answers:
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            names |= {
                f"{n} {c['status']}" for n, c in json.loads(result.body)["checks"].items() if c["status"] != "healthy"
            }
    return names


def app_env(**extra: str) -> dict[str, str]:
    return {
        "OTEL_SERVICE_NAME": "faults",
        "OTEL_RELIABILITY_HEALTH_TOKEN": HEALTH_TOKEN,
        "OTEL_RELIABILITY_ADMIN_TOKEN": ADMIN_TOKEN,
        "OTEL_RELIABILITY_SNAPSHOT_INTERVAL": "1",
        **extra,
    }


def database(pg: Postgres, name: str) -> str:
    pg.psql(f"CREATE DATABASE {name} OWNER {pg.user}")
    pg.psql(f"ALTER DATABASE {name} SET statement_timeout = '300s'")  # what the db-timeout check expects
    return pg.url("psycopg").rsplit("/", 1)[0] + "/" + name


def fresh_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def app_running(log_dir: Path, **kw: Any) -> Iterator[AppProcess]:
    app = start_app("app:app", app_dir=APP_DIR, log_dir=log_dir, **kw)
    try:
        yield app
    finally:
        app.stop()


def sum_series(port: int, name: str, **labels: str) -> float:
    return sum(v for lab, v in scrape(port).get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


# --- PostgreSQL ---------------------------------------------------------------------------------------------------
def pg_outage(pg: Postgres, log_dir: Path, outage: float = 5.0, before: float = 3.0, after: float = 8.0) -> Row:
    """PostgreSQL stopped for ``outage`` seconds and started again, under reads and writes."""
    bar = "health JSON only, never 500, never > 3 s; not healthy while requests fail; recovered within 5 s"
    row = Row(f"PostgreSQL stopped {outage:.0f} s under load", bar)
    url = database(pg, fresh_name("outage"))
    with app_running(log_dir, env=app_env(DATABASE_URL=url)) as app:

        def pick(i: int) -> tuple[str, str]:
            return ("GET", "/db/read") if i % 2 else ("POST", f"/db/increment?request_id=o{i}")

        with Load(app.url, pick, rate=20) as load, Load(app.url, lambda i: ("GET", "/api/health"), 5, 1) as health:
            time.sleep(before)
            stopped = time.monotonic()
            pg.stop("fast")
            time.sleep(max(0.0, outage - (time.monotonic() - stopped)))
            pg.start()
            started = time.monotonic()
            time.sleep(after)
    failures = [r for r in load.bad() if r.at >= stopped]
    answers = health.results
    statuses = [health_status(r) for r in answers]
    worst = max((r.seconds for r in answers), default=0.0)
    not_json = sum(s is None for s in statuses)
    five_hundred = sum(r.status == 500 or r.status == 0 for r in answers)
    healthy_while_failing = 0
    if failures:
        # From the moment the first failure was answered (the error was counted before its response left): a
        # health call that started earlier, while that request was still running, could not know of it yet.
        first, last = min(r.at + r.seconds for r in failures), max(r.at + r.seconds for r in failures)
        healthy_while_failing = sum(
            1 for r, s in zip(answers, statuses, strict=True) if first <= r.at <= last and s == "healthy"
        )
    last_bad_request = max((r.at + r.seconds for r in load.bad()), default=started)
    last_unhealthy = max((r.at for r, s in zip(answers, statuses, strict=True) if s != "healthy"), default=started)
    recovered = max(last_bad_request, last_unhealthy) - started
    unhealthy_seen = sum(1 for s in statuses if s != "healthy")
    row.notes.append("not healthy: " + ", ".join(sorted(_unhealthy_checks(answers))) or "none")
    row.served, row.failed = len(load.ok()), len(load.bad())
    row.health = f"{len(answers)} ({worst * 1000:.0f} ms worst; {unhealthy_seen} not healthy)"
    row.recovered = f"{recovered:.1f} s after start"
    row.notes += [f"non-JSON {not_json}, 500/no answer {five_hundred}",
                  f"healthy while requests failed: {healthy_while_failing}",
                  "health = worst check except the 5-minute error-rate window"]  # fmt: skip
    row.ok = bool(
        failures
        and not_json == 0
        and five_hundred == 0
        and worst <= 3.0
        and healthy_while_failing == 0
        and recovered <= 5.0
    )
    return row


def pg_terminate(pg: Postgres, log_dir: Path, seconds: float = 10.0, every: float = 0.2) -> Row:
    """Every backend of the app's database terminated (pg_terminate_backend) every ``every`` s, mid-transaction."""
    row = Row(f"pg_terminate_backend every {every} s for {seconds:.0f} s",
              "run_in_transaction recovers: no request fails, no update lost or doubled")  # fmt: skip
    name = fresh_name("terminate")
    url = database(pg, name)
    kills = 0
    with app_running(log_dir, env=app_env(DATABASE_URL=url)) as app:

        def pick(i: int) -> tuple[str, str]:
            return ("POST", f"/db/increment?request_id=t{i}")

        with Load(app.url, pick, rate=60, threads=6) as load:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                out = pg.psql(
                    f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}' "
                    "AND pid <> pg_backend_pid()"
                )
                kills += int(out or 0)
                time.sleep(every)
        _, _, body = http("GET", app.url + "/db/count")
        count = json.loads(body)
        retried = sum_series(app.metrics_port, "db_client_transaction_retries_total", error_type="connection_lost")
    applied = sum(1 for r in load.ok() if b'"applied":true' in r.body)
    row.served, row.failed = len(load.ok()), len(load.bad())
    lost = applied - count["n"]
    row.lost = f"{lost} updates ({count['n']} counted, {applied} acknowledged)"
    row.notes += [f"{kills} backends terminated", f"{retried:.0f} retries after a lost connection"]
    reasons = Counter(f"{r.status} {r.body[:120].decode(errors='replace')}" for r in load.bad())
    row.notes += [f"{n} x {reason}" for reason, n in reasons.most_common(3)]
    row.ok = row.failed == 0 and lost == 0 and count["n"] == count["applied"] and retried > 0
    return row


# --- the collector ------------------------------------------------------------------------------------------------
class Collector:
    """The real collector (built by ``make collector``) on fixed loopback ports, startable again on the same ones."""

    def __init__(self, log_dir: Path) -> None:
        self.binary = ensure_collector()
        self.ports = {name: free_port() for name in ("grpc", "http", "prom", "health")}
        self.log_dir, self.proc, self.starts = log_dir, None, 0

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, **{f"OTEL_RELIABILITY_COLLECTOR_{k.upper()}_ENDPOINT": f"127.0.0.1:{p}"
                                for k, p in self.ports.items() if k != "prom"},
               "OTEL_RELIABILITY_COLLECTOR_PROMETHEUS_ENDPOINT": f"127.0.0.1:{self.ports['prom']}"}  # fmt: skip
        log = open(self.log_dir / f"collector-{self.starts}.log", "wb")  # noqa: SIM115 - the process owns it
        config = ROOT / "collector-config" / "otelcol.yaml"
        self.proc = subprocess.Popen([str(self.binary), f"--config={config}"], stdout=log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)  # fmt: skip
        health = f"http://127.0.0.1:{self.ports['health']}/"
        wait_until(lambda: http("GET", health, timeout=1)[0] == 200, timeout=30, what="collector health")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def pings(self) -> float:
        try:
            return sum_series(self.ports["prom"], PING_COUNT, http_route="/ping")
        except Exception:
            return -1.0


def collector_outage(
    log_dir: Path, down: float = 15.0, before: float = 4.0, after: float = 4.0, export_timeout: float | None = None
) -> Row:
    """The collector stopped for ``down`` seconds and started again while the app exports every second.

    An outage shorter than the exporter's own retries (OTEL_EXPORTER_OTLP_TIMEOUT, 10 s) is ridden out
    inside one export and says nothing; the short version sets ``export_timeout`` below ``down``."""
    row = Row(f"collector down {down:.0f} s, then back",
              "nothing lost; per signal one WARNING, one INFO, a reminder a minute; no upstream line")  # fmt: skip
    collector = Collector(log_dir)
    collector.start()
    try:
        env = app_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.ports['grpc']}",
                      OTEL_METRIC_EXPORT_INTERVAL="1000")  # fmt: skip
        if export_timeout is not None:
            env["OTEL_EXPORTER_OTLP_TIMEOUT"] = str(export_timeout)
            row.notes.append(f"OTEL_EXPORTER_OTLP_TIMEOUT={export_timeout:g}")
        with app_running(log_dir, env=env) as app:
            with Load(app.url, lambda i: ("GET", "/ping"), rate=20, threads=2) as load:
                time.sleep(before)
                collector.stop()
                time.sleep(down)
                collector.start()
                back = time.monotonic()
                at_restart = len(load.ok())
                caught_up = wait_until(lambda: collector.pings() >= at_restart and time.monotonic(), timeout=40,
                                       interval=0.25, what="counts at the collector after its restart")  # fmt: skip
                time.sleep(max(0.0, after - (time.monotonic() - back)))
            served = len(load.ok())
            counted = wait_until(lambda: (c := collector.pings()) >= served and c, timeout=30, interval=0.5,
                                 what="every request counted at the collector")  # fmt: skip
            time.sleep(2)  # one more export: nothing counted twice either
            counted = collector.pings()
            # Spans and log records go out every 5 s (OTEL_BSP/BLRP_SCHEDULE_DELAY): give each its "back" line.
            with contextlib.suppress(AssertionError):
                wait_until(lambda: _export_lines(app.log())[2], timeout=15, interval=0.5, what="every back line")
            warnings, backs, _ = _export_lines(app.log())
            log = app.log()
    finally:
        collector.stop()
    noise = ("Transient error", "Failed to export", "Traceback", "retrying in")
    upstream = [line for line in log.splitlines() if any(s in line for s in noise)]
    signals = {s for s in ("metrics", "traces", "logs") if any(f"OTLP {s} " in w for w in warnings)}
    per_signal_ok = all(
        sum(f"OTLP {s} " in w for w in warnings) == 1 and sum(f"OTLP {s} " in b for b in backs) == 1 for s in signals
    )
    row.notes += [OURS.split(line.split(";")[0], maxsplit=1)[-1] for line in warnings + backs]
    row.served, row.failed = served, len(load.bad())
    row.lost = f"{served - counted:.0f} counts ({counted:.0f} at the collector)"
    row.recovered = f"{caught_up - back:.1f} s after restart"
    row.log_lines = (
        f"{len(warnings)} WARNING + {len(backs)} INFO ({', '.join(sorted(signals))}); upstream {len(upstream)}"
    )
    row.ok = counted == served and "metrics" in signals and per_signal_ok and not upstream and row.failed == 0
    return row


# The head of our log lines: `otel-reliability[pid] LEVEL: ` on stderr (otel_reliability/console.py), or
# `otel-reliability: ` inside an app's own log format.
OURS = re.compile(r"otel-reliability(?:\[\d+\] [A-Z]+)?: ")


def _export_lines(log: str) -> tuple[list[str], list[str], bool]:
    """Our exporter lines in an app log: the WARNINGs, the INFOs, and whether every signal that warned is back."""
    ours = [line for line in log.splitlines() if OURS.search(line) and "OTLP " in line]
    warnings = [line for line in ours if " failing (" in line]
    backs = [line for line in ours if "is back after" in line]
    warned = {line.split(" export to ")[0] for line in warnings}
    returned = {line.split(" export to ")[0] for line in backs}
    return warnings, backs, bool(warned) and warned <= returned


# --- breakers -----------------------------------------------------------------------------------------------------
def flapping(log_dir: Path, seconds: float = 20.0, period: float = 0.5) -> Row:
    """A dependency failing and recovering every ``period`` s behind pybreaker and circuitbreaker."""
    row = Row(f"dependency flapping every {period} s for {seconds:.0f} s",
              "transitions exported == the library's own count; health == scrape")  # fmt: skip
    with app_running(log_dir, env=app_env()) as app:
        http("POST", app.url + f"/control/flap?seconds={seconds}&period={period}")
        libraries = ("pybreaker", "circuitbreaker")
        with Load(app.url, lambda i: ("GET", f"/flaky/{libraries[i % 2]}"), rate=60, threads=2) as load:
            time.sleep(seconds + 0.3)
        time.sleep(0.3)  # past the reset timeout: the next calls close both breakers
        for library in libraries:
            for _ in range(3):
                http("GET", app.url + f"/flaky/{library}")
        _, _, body = http("GET", app.url + "/debug/transitions")
        listener = json.loads(body)
        _, _, body = http("GET", app.url + "/api/health/circuit-breakers")
        health = json.loads(body)["breakers"]
        metrics = scrape(app.metrics_port)
    mismatches = []
    figures = []
    for library in libraries:
        name = f"flappy_{library}"
        exported = sum(v for lab, v in metrics.get("circuit_breaker_transitions_total", [])
                       if lab.get("circuit_breaker_name") == name)  # fmt: skip
        scraped_state = [lab["circuit_breaker_state"] for lab, v in metrics.get("circuit_breaker_state", [])
                         if lab.get("circuit_breaker_name") == name and v == 1]  # fmt: skip
        figures.append(f"{library}: {listener[library]} by the library, {exported:.0f} exported")
        if exported != listener[library] or listener[library] < 4:
            mismatches.append(f"{library} transitions")
        if scraped_state != [health[name]["state"]]:
            mismatches.append(f"{library} state: health {health[name]['state']}, scrape {scraped_state}")
    row.served, row.failed = len(load.results), 0
    row.notes += [*figures, f"{len(load.bad())} answered 502/503 by the breakers", *mismatches]
    row.ok = not mismatches
    return row


def worker_sigkill(log_dir: Path, seconds: float = 10.0) -> Row:
    """A gunicorn worker SIGKILLed under load; every served request must still be counted on :9464."""
    import psutil

    row = Row("SIGKILL of a gunicorn worker under load", "nothing lost on the host-wide :9464")
    with app_running(log_dir, env=app_env(), server="gunicorn", workers=2) as app:
        with Load(app.url, lambda i: ("GET", "/ping"), rate=40) as load:
            time.sleep(seconds / 2)
            workers = psutil.Process(app.proc.pid).children()
            if workers:
                os.kill(workers[0].pid, signal.SIGKILL)
            time.sleep(seconds / 2)
        time.sleep(2)
        served = len(load.ok())
        counted = sum_series(app.metrics_port, PING_COUNT, http_route="/ping")
    row.served, row.failed = served, len(load.bad())
    row.lost = f"{served - counted:.0f} counts ({counted:.0f} on :9464)"
    if counted < served:
        row.notes.append("requests the killed worker completed are missing on :9464 (its tally should hold them)")
    row.ok = counted == served
    return row


# --- bad input ------------------------------------------------------------------------------------------------------
def bad_settings(log_dir: Path) -> Row:
    """Every bad OTEL_RELIABILITY_* value (tests/test_config.py's list), all started at once."""
    from tests.test_config import BAD_VALUES

    row = Row(f"{len(BAD_VALUES)} bad settings", "each stops start-up (exit 2) with one line naming the variable")
    cmd = [str(BIN / "opentelemetry-instrument"), str(BIN / "python"), "-c", "print('app started')"]
    procs = {
        name: subprocess.Popen(cmd, env={"PATH": str(BIN), name: value}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        for name, value in BAD_VALUES.items()
    }  # fmt: skip
    stopped = 0
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        lines = err.strip().splitlines()
        if proc.returncode == 2 and "app started" not in out and len(lines) == 1 and name in lines[0]:
            stopped += 1
        else:
            row.notes.append(f"{name}: exit {proc.returncode}, {len(lines)} lines")
    row.served, row.failed = stopped, len(BAD_VALUES) - stopped
    row.ok = stopped == len(BAD_VALUES)
    return row


def _random_path(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "-_.~%"
    segments = [("".join(rng.choices(alphabet, k=rng.randint(1, 12)))) for _ in range(rng.randint(1, 5))]
    query = urllib.parse.urlencode({"".join(rng.choices(string.ascii_lowercase, k=4)): uuid.uuid4().hex})
    return (
        "/" + "/".join(urllib.parse.quote(s, safe="") for s in segments) + ("?" + query if rng.random() < 0.7 else "")
    )


def path_flood(log_dir: Path, requests: int = 3500) -> Row:
    """``requests`` GETs to random paths and query strings; the metric series must not grow."""
    row = Row(f"{requests} requests to random paths", "no new metric series")
    rng = random.Random(13)
    with app_running(log_dir, env=app_env()) as app:
        http("GET", app.url + "/ping")
        http("GET", app.url + "/no/such/path")  # the one 404 series any app has
        time.sleep(0.2)

        def series() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
            return {(n, tuple(sorted(lab.items()))) for n, points in scrape(app.metrics_port).items()
                    for lab, _ in points}  # fmt: skip

        before = series()
        paths = [_random_path(rng) for _ in range(requests)]
        with Load(app.url, lambda i: ("GET", paths[i % len(paths)]), rate=400, threads=4) as load:
            wait_until(lambda: len(load.results) >= requests, timeout=120, interval=0.2, what="the flood")
        time.sleep(0.2)
        added = {n for n, _ in series() - before}
    row.served, row.failed = len(load.results), sum(1 for r in load.results if r.status >= 500 or r.status == 0)
    row.notes.append(f"series added: {sorted(added) or 'none'}")
    row.ok = not added and row.failed == 0
    return row


def fuzz_health(log_dir: Path, examples: int = 420) -> Row:
    """Hypothesis-generated requests (method, path, query, token, Accept) to the health and admin routes."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    row = Row(f"{examples} fuzzed health/admin requests", "no 5xx, every answer within 3 s")
    answers: list[tuple[int, float]] = []
    routes = ["/api/health", "/api/health/live", "/api/health/ready", "/api/health/circuit-breakers",
              "/api/health/error-rate", "/api/health/pool", "/api/health/resources", "/api/health/db-timeout",
              "/api/admin/monitoring/stuck-operations", "/api/admin/monitoring/stuck-operations/cleanup"]  # fmt: skip
    text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
    tokens = st.one_of(st.none(), st.sampled_from([HEALTH_TOKEN, ADMIN_TOKEN]), text)
    with app_running(log_dir, env=app_env()) as app:

        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(
            method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
            route=st.sampled_from(routes),
            suffix=st.one_of(st.just(""), text.map(lambda s: "/" + urllib.parse.quote(s, safe=""))),
            query=st.dictionaries(text, text, max_size=3),
            token=tokens,
            scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", ""]),
            accept=st.sampled_from(["application/json", "application/health+json", "*/*", "text/html", "x/y;q=0"]),
        )
        def one(method: str, route: str, suffix: str, query: dict[str, str], token: str | None, scheme: str,
                accept: str) -> None:  # fmt: skip
            headers = {"Accept": accept}
            if token is not None:
                headers["Authorization"] = (scheme + token).strip() or "x"
            url = app.url + route + suffix + ("?" + urllib.parse.urlencode(query) if query else "")
            started = time.monotonic()
            status, _, _ = http(method, url, headers=headers, timeout=10)
            answers.append((status, time.monotonic() - started))
            assert status < 500, (method, url, headers, status)

        try:
            one()
        except AssertionError as exc:
            row.notes.append(str(exc)[:200])
    worst = max((s for _, s in answers), default=0.0)
    row.served, row.failed = len(answers), sum(1 for code, _ in answers if code >= 500)
    row.health = f"{len(answers)} ({worst * 1000:.0f} ms worst)"
    row.ok = row.failed == 0 and worst <= 3.0 and len(answers) >= examples
    return row


# --- soak ---------------------------------------------------------------------------------------------------------
def soak(pg: Postgres, log_dir: Path, seconds: float = 600.0, sample_every: float = 10.0) -> Row:
    """Steady mixed load for ``seconds``; the server's RSS, threads and open files must stay flat."""
    import psutil

    row = Row(f"soak {seconds / 60:.0f} min" if seconds >= 60 else f"soak {seconds:.0f} s",
              "after warm-up: RSS +<5 MB and +<3%, threads +<=2, open files +<=4")  # fmt: skip
    url = database(pg, fresh_name("soak"))
    samples: list[tuple[float, int, int]] = []
    with app_running(log_dir, env=app_env(DATABASE_URL=url)) as app:
        process = psutil.Process(app.proc.pid)
        mix = [("GET", "/ping"), ("GET", "/db/read"), ("GET", "/flaky/pybreaker"), ("GET", "/api/health"),
               ("GET", "/api/health/error-rate"), ("GET", "/no/such/path")]  # fmt: skip

        def pick(i: int) -> tuple[str, str]:
            return ("POST", f"/db/increment?request_id=s{i}") if i % 7 == 0 else mix[i % len(mix)]

        with Load(app.url, pick, rate=40) as load:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                samples.append((process.memory_info().rss / 2**20, process.num_threads(), process.num_fds()))
                time.sleep(sample_every)
            samples.append((process.memory_info().rss / 2**20, process.num_threads(), process.num_fds()))
    warm = samples[max(1, len(samples) // 5) :]
    quarter = max(1, len(warm) // 4)
    early, late = warm[:quarter], warm[-quarter:]
    rss_early, rss_late = statistics.median(s[0] for s in early), statistics.median(s[0] for s in late)
    threads = (max(s[1] for s in early), max(s[1] for s in late))
    fds = (max(s[2] for s in early), max(s[2] for s in late))
    growth = rss_late - rss_early
    expected_404 = sum(1 for r in load.results if r.path == "/no/such/path" and r.status == 404)
    row.served, row.failed = len(load.ok()), len(load.bad()) - expected_404
    row.notes += [f"RSS {rss_early:.1f} -> {rss_late:.1f} MB", f"threads {threads[0]} -> {threads[1]}",
                  f"open files {fds[0]} -> {fds[1]}", f"{len(samples)} samples",
                  f"plus {expected_404} deliberate 404s"]  # fmt: skip
    rss_flat = growth < 5 and growth < 0.03 * rss_early
    row.ok = rss_flat and threads[1] <= threads[0] + 2 and fds[1] <= fds[0] + 4 and row.failed == 0
    return row


# --- the table ------------------------------------------------------------------------------------------------------
def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pg = next(iter(sorted(Path("/usr/lib/postgresql").glob("*"), reverse=True)), None)
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), Python "
            f"{platform.python_version()}, PostgreSQL {pg.name if pg else '?'}")  # fmt: skip


def render(rows: list[Row], quick: bool) -> str:
    lines = [" | ".join(HEADER), " | ".join("---" for _ in HEADER)]
    lines += [" | ".join(c.replace("|", "/") for c in row.cells()) for row in rows]
    return "\n".join(f"| {line} |" for line in lines)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def merge(old_text: str, new_table: str) -> str:
    """The old file's table with the rows of ``new_table`` replacing those of the same fault, in the old order."""
    old_rows = [line for line in old_text.splitlines() if line.startswith("| ")][2:]
    new_lines = new_table.splitlines()
    head, new_rows = new_lines[:2], new_lines[2:]
    fresh = {line.split(" | ", 1)[0]: line for line in new_rows}
    kept = [fresh.pop(line.split(" | ", 1)[0], line) for line in old_rows]
    return "\n".join([*head, *kept, *fresh.values()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated fault names: " + ", ".join(FAULTS))
    parser.add_argument("--quick", action="store_true", help="the short versions (as in make test)")
    parser.add_argument("--output", type=Path, default=None, help="where to write the table (default FAULTS.md)")
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(FAULTS)
    unknown = set(chosen) - set(FAULTS)
    if unknown:
        parser.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, _interrupt)  # stopped from outside: still stop the apps and clusters it started
    log_dir = Path(tempfile.mkdtemp(prefix="otel-rel-faults-"))
    pg: Postgres | None = None
    rows = []
    try:
        for name in chosen:
            full, quick, needs_pg = FAULTS[name]
            if needs_pg and pg is None:
                pg = start_postgres()
            started = time.monotonic()
            try:
                row = (quick if args.quick else full)(pg, log_dir)
            except BaseException as exc:  # a fault that could not run is a row that did not meet its bar
                if isinstance(exc, KeyboardInterrupt):
                    raise
                row = Row(name, "ran", notes=[f"did not run: {type(exc).__name__}: {str(exc)[:200]}"])
            rows.append(row)
            print(f"{name}: {'met' if row.ok else 'NOT met'} in {time.monotonic() - started:.0f} s -- "
                  + " | ".join(row.cells()[1:]), flush=True)  # fmt: skip
    finally:
        if pg is not None:
            pg.stop("immediate")
    table = render(rows, args.quick)
    print(table)
    output = args.output or (None if args.quick else FAULTS_MD)
    if output is not None:
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        rerun = ""
        if args.only and output.exists():  # some faults re-run: keep the other rows, say which are newer
            table = merge(output.read_text(), table)
            earlier = re.findall(r" Rows re-run on \S+ \S+ UTC: [^\n]*?\.(?= Rows|\n)", output.read_text())
            rerun = "".join(earlier) + f" Rows re-run on {when}: {', '.join(r.fault for r in rows)}."
            first = re.search(r"\) on ([0-9-]+ [0-9:]+ UTC)\.", output.read_text())
            when = first.group(1) if first else when
        output.write_text(
            "# Faults with figures\n\n"
            f"Written by `make faults` (`python benchmarks/faults.py{' --quick' if args.quick else ''}`) on {when}."
            f"{rerun}\nMachine: {machine()}.\n"
            "Taken on a busy machine (2 cores shared with other jobs): latencies are upper bounds.\n\n"
            f"{table}\n\n" + EXPLANATION
        )
        print(f"wrote {output} (logs in {log_dir})")
    return 0 if all(r.ok for r in rows) else 1


EXPLANATION = """How each row is produced (benchmarks/faults.py; the short versions run in `make test` as
tests/test_faults_*.py): every fault runs tests/apps/faults/app.py under `opentelemetry-instrument uvicorn`
(gunicorn for the worker kill) on loopback, against a private PostgreSQL cluster and the collector built by
`make collector`. "requests served / failed" counts the load's 2xx / other answers; "lost" compares what clients
were told succeeded with what the database or the metrics backend holds.

- PostgreSQL stopped: reads and idempotent increments at 20/s, `/api/health` polled 5 times a second. "health" is
  the worst status of its checks except the error-rate one: that is a 5-minute window and, by design, stays
  degraded after an outage (so the aggregate status does too). "recovered in": from the server's start until the
  last failed request and the last not-healthy answer.
- pg_terminate_backend: every backend of the app's database is terminated every 0.2 s while 6 clients increment
  one row under SERIALIZABLE through `run_in_transaction`; each increment records its request id in the same
  transaction, so a retry after a connection lost during COMMIT cannot count twice.
- Collector down: the app exports every second by OTLP/gRPC; counts are `http_server_request_duration_seconds_count`
  of `/ping` on the collector's Prometheus exporter, restarted empty, so everything there after the restart was
  re-sent by the app. "log lines" are the app's; "upstream" counts upstream exporter lines (none are printed). An
  outage shorter than the exporter's own retries (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s) is ridden out in one export.
- Flapping: the dependency fails and recovers every 0.5 s; pybreaker's transitions are counted by its own
  listener, circuitbreaker's (it has no listeners) by comparing the state it reports around every call.
- Worker SIGKILL: two gunicorn workers behind the host-wide `:9464` (each worker publishes its readings to the
  master every 0.5 s); one is killed halfway. Its requests since its last publication are in its tally (the HTTP
  layer's memory-mapped copy of the request histogram, otel_reliability/crash_safe.py), which the master reads for a
  dead worker: nothing completed is lost.
- Soak: RSS, threads and open files of the server process every 10 s; the first fifth is warm-up; the medians of
  the first and last quarters of the rest are compared.
"""

Fault = Callable[[Any, Path], Row]
FAULTS: dict[str, tuple[Fault, Fault, bool]] = {
    "pg_outage": (lambda pg, d: pg_outage(pg, d), lambda pg, d: pg_outage(pg, d, 2.0, 2.0, 6.0), True),
    "pg_terminate": (lambda pg, d: pg_terminate(pg, d), lambda pg, d: pg_terminate(pg, d, 3.0), True),
    "collector_outage": (
        lambda pg, d: collector_outage(d),
        lambda pg, d: collector_outage(d, 3.0, 2.0, 2.0, 1.0),
        False,
    ),
    "flapping": (lambda pg, d: flapping(d), lambda pg, d: flapping(d, 4.0), False),
    "worker_sigkill": (lambda pg, d: worker_sigkill(d), lambda pg, d: worker_sigkill(d, 4.0), False),
    "bad_settings": (lambda pg, d: bad_settings(d), lambda pg, d: bad_settings(d), False),
    "path_flood": (lambda pg, d: path_flood(d), lambda pg, d: path_flood(d, 500), False),
    "fuzz_health": (lambda pg, d: fuzz_health(d), lambda pg, d: fuzz_health(d, 100), False),
    "soak": (lambda pg, d: soak(pg, d), lambda pg, d: soak(pg, d, 20.0, 1.0), True),
}

if __name__ == "__main__":
    sys.exit(main())
