"""Start-up under opentelemetry-instrument: one line on stderr saying what runs, our warnings in the same format,
and nothing of the app's libraries imported before the program imports them (each patched when it does).

Real programs under ``opentelemetry-instrument python -c ...``; what they saw is printed as JSON on stdout.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path

from otel_reliability.version import __version__
from tests.support import BIN, free_port

LINE = re.compile(r"^otel-reliability\[(\d+)\] (INFO|WARNING|ERROR): (.*)$", re.M)
APP_LIBRARIES = ("sqlalchemy", "fastapi", "starlette", "anyio", "pydantic", "pybreaker", "circuitbreaker", "purgatory")


def run(code: str, env: Mapping[str, str] | None = None, *, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTEST_"))}
    full.update({"OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(free_port())})
    full.update(env or {})
    cmd = [str(BIN / "opentelemetry-instrument"), str(BIN / "python"), "-c", textwrap.dedent(code)]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=120, cwd=cwd)


def ours(stderr: str) -> list[tuple[str, str]]:
    return [(m.group(2), m.group(3)) for m in LINE.finditer(stderr)]


def test_one_start_up_line_says_what_runs() -> None:
    port = free_port()
    proc = run("pass", {"OTEL_EXPORTER_PROMETHEUS_PORT": str(port), "OTEL_SERVICE_NAME": "shop"})
    assert proc.returncode == 0, proc.stderr
    lines = ours(proc.stderr)
    assert len(lines) == 1 and lines[0][0] == "INFO", proc.stderr
    text = lines[0][1]
    assert text.startswith(f"{__version__} started: service.name=shop; "), text
    assert "HTTP layer lean (auto: spans not exported)" in text
    assert f"metrics prometheus http://127.0.0.1:{port}/metrics" in text
    assert "traces none (not recorded)" in text
    assert "health /api/health;" in text
    count = int(re.search(r"(\d+) instrumentors active", text).group(1))  # type: ignore[union-attr]
    assert count >= 8, text  # ours (9 entry points) less those with nothing to do


def test_the_start_up_line_names_otlp_destinations_without_secrets() -> None:
    proc = run(
        "pass",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://alice:s3cret-pw@127.0.0.1:9/?token=t0ken-value",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer h3ader-secret",
            "OTEL_RELIABILITY_HEALTH_TOKEN": "health-t0ken-secret",
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
            "OTEL_METRIC_EXPORT_INTERVAL": "60000",
        },
    )
    text = " ".join(t for _, t in ours(proc.stderr) if "started:" in t)
    assert "metrics otlp/http/protobuf http://***@127.0.0.1:9/?***" in text, proc.stderr
    assert "traces otlp/http/protobuf http://***@127.0.0.1:9/?***" in text
    assert "HTTP layer lean (auto: spans exported)" in text
    for secret in ("s3cret-pw", "alice", "t0ken-value", "h3ader-secret", "health-t0ken-secret"):
        assert secret not in proc.stderr


def test_the_variable_silences_the_line() -> None:
    proc = run("pass", {"OTEL_RELIABILITY_STARTUP_LINE": "false"})
    assert proc.returncode == 0 and ours(proc.stderr) == [], proc.stderr


def test_warnings_come_in_the_same_format() -> None:
    """The metrics port is taken: the WARNING has the start-up line's head, not the last-resort bare message."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = run("pass", {"OTEL_EXPORTER_PROMETHEUS_PORT": str(taken.getsockname()[1])})
    lines = ours(proc.stderr)
    assert [level for level, _ in lines] == ["WARNING", "INFO"], proc.stderr
    assert lines[0][1].startswith("metrics endpoint 127.0.0.1:"), lines
    assert {m.group(1) for m in LINE.finditer(proc.stderr)} == {str(proc_pid(proc.stderr))}
    # every non-empty stderr line is one of ours: nothing came out of Python's last-resort handler
    assert all(LINE.match(line) for line in proc.stderr.splitlines() if line.strip()), proc.stderr


def proc_pid(stderr: str) -> int:
    found = LINE.search(stderr)
    assert found, stderr
    return int(found.group(1))


def test_an_app_that_configured_logging_gets_our_warnings_in_its_own_format() -> None:
    """Where the app has a handler of its own, it prints our lines (once), not our fallback."""
    proc = run(
        """
        import logging, sys
        logging.basicConfig(stream=sys.stderr, format="APP %(levelname)s %(name)s %(message)s")
        logging.getLogger("otel_reliability.breakers").warning("otel-reliability: a test warning")
        """
    )
    assert "APP WARNING otel_reliability.breakers otel-reliability: a test warning" in proc.stderr, proc.stderr
    assert "a test warning" not in " ".join(t for _, t in ours(proc.stderr))


LAZY_PROGRAM = """
import json, re, sys, urllib.request
libraries = {libraries!r}
before = sorted(m for m in sys.modules if m.split(".")[0] in libraries)

import pybreaker, sqlalchemy
breaker = pybreaker.CircuitBreaker(fail_max=3, name="late-breaker")
engine = sqlalchemy.create_engine("sqlite:///{db}", pool_size=2, pool_logging_name="late-pool")
with engine.connect() as conn:
    conn.exec_driver_sql("select 1")
    metrics = urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=10).read().decode()

from fastapi import FastAPI
from otel_reliability.instrumentation import http_server
app = FastAPI()
print(json.dumps({{
    "before": before,
    "breaker": bool(re.search(
        r'circuit_breaker_state[{{]circuit_breaker_name="late-breaker",circuit_breaker_state="closed"[^}}]*[}}] 1.0',
        metrics,
    )),
    "pool": bool(re.search(
        r'db_client_connection_count[{{]db_client_connection_pool_name="late-pool",db_client_connection_state="used"'
        r'[^}}]*[}}] 1.0', metrics
    )),
    "statements": "db_client_operation_duration_seconds_count" in metrics,
    "health_routes": "/api/health" in [getattr(r, "path", "") for r in app.routes],
    "lean_layer": http_server.lean_installed(app),
}}))
"""


def test_nothing_of_the_app_is_imported_before_the_program_imports_it_and_then_it_is_instrumented(
    tmp_path: Path,
) -> None:
    port = free_port()
    code = LAZY_PROGRAM.format(libraries=APP_LIBRARIES, db=tmp_path / "late.db", port=port)
    proc = run(code, {"OTEL_EXPORTER_PROMETHEUS_PORT": str(port)})
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["before"] == [], seen  # not sqlalchemy, fastapi, starlette, anyio, pydantic, breakers
    assert seen["breaker"], seen  # a breaker created after its library's import is counted
    assert seen["pool"], seen  # so is a pool, and the connection it holds
    assert seen["statements"], seen
    assert seen["health_routes"], seen
    assert seen["lean_layer"], seen
    assert not [level for level, _ in ours(proc.stderr) if level != "INFO"], proc.stderr


def test_with_spans_exported_fastapi_is_still_imported_only_by_the_program() -> None:
    """The contrib layer's upstream module imports FastAPI itself: it is loaded when the program imports FastAPI."""
    code = f"""
        import json, sys
        before = sorted(m for m in sys.modules if m.split(".")[0] in {APP_LIBRARIES!r})
        from fastapi import FastAPI
        app = FastAPI()
        contrib = bool(getattr(app, "_is_instrumented_by_opentelemetry", False))
        print(json.dumps({{"before": before, "contrib": contrib}}))
        """
    proc = run(code, {"OTEL_RELIABILITY_HTTP_LAYER": "contrib", "OTEL_TRACES_EXPORTER": "console"})
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"before": [], "contrib": True}, seen


def test_pytest_under_opentelemetry_instrument_sees_no_assert_rewrite_warning(tmp_path: Path) -> None:
    """anyio is a pytest plugin: imported before pytest starts, it cannot be rewritten and pytest warns."""
    (tmp_path / "test_plain.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTEST_"))}
    full.update({"OTEL_EXPORTER_PROMETHEUS_PORT": str(free_port()), "OTEL_RELIABILITY_STARTUP_LINE": "false"})
    cmd = [str(BIN / "opentelemetry-instrument"), str(BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-W", "error::pytest.PytestAssertRewriteWarning", "--rootdir", str(tmp_path), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=full, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PytestAssertRewriteWarning" not in proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_uvicorn_gives_a_starting_worker_time_to_answer_its_first_ping(tmp_path: Path) -> None:
    """uvicorn kills a worker that does not answer a ping within --timeout-worker-healthcheck (5 s by default); an
    instrumented worker answers only once opentelemetry-instrument's set-up is done, which a busy machine makes
    longer than that. With a 2 s timeout, no worker is killed while it starts (restarts: tests/test_launchers.py)."""
    from tests.support import ROOT, get_json, start_app, wait_until

    app = start_app(
        "app:app", app_dir=ROOT / "tests" / "apps" / "prefork", workers=2, timeout=90, log_dir=tmp_path,
        server_args=("--timeout-worker-healthcheck", "2"),
    )  # fmt: skip
    try:
        wait_until(lambda: get_json(app.url + "/api/health/live")[1]["workers"] == 2, timeout=60, what="2 workers")
        log = app.log()
    finally:
        app.stop()
    assert "died" not in log, log
