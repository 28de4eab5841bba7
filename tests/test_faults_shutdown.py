"""SIGTERM under uvicorn and gunicorn: a final export carries the counts since the last periodic export to the
collector, and an unreachable collector holds the exit for about 2 s, not for the exporters' retries.

The export interval is 60 s, so whatever reaches the receiver was sent by the final export.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from tests.support import ROOT, AppProcess, OtlpReceiver, free_port, http

APP_DIR = ROOT / "tests" / "apps" / "faults"
StartApp = Callable[..., AppProcess]
REQUESTS = 25


def otlp(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",
    }


def sigterm(app: AppProcess) -> float:
    """Send SIGTERM as a process manager would (to the server's main process); seconds until it is gone."""
    started = time.monotonic()
    os.kill(app.proc.pid, signal.SIGTERM)
    app.proc.wait(30)
    return time.monotonic() - started


def pings(receiver: OtlpReceiver) -> float:
    return sum(
        p["_value"] for _, p in receiver.metric_points("http.server.request.duration") if p.get("http.route") == "/ping"
    )


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_sigterm_exports_the_last_counts(server: str, app_factory: StartApp, receiver: OtlpReceiver) -> None:
    app = app_factory("app:app", app_dir=APP_DIR, server=server, env=otlp(receiver.endpoint))
    for _ in range(REQUESTS):
        assert http("GET", app.url + "/ping")[0] == 200
    assert pings(receiver) == 0  # nothing periodic yet
    sigterm(app)
    assert pings(receiver) == REQUESTS, app.log()[-2000:]


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_sigterm_with_the_collector_down_exits_within_the_bound(server: str, app_factory: StartApp) -> None:
    app = app_factory("app:app", app_dir=APP_DIR, server=server, env=otlp(f"http://127.0.0.1:{free_port()}"))
    for _ in range(5):
        http("GET", app.url + "/ping")
    seconds = sigterm(app)
    log = app.log()
    assert seconds < 4.0, (seconds, log[-2000:])  # 2 s for the final export, the rest is the server's own exit
    assert log.count("exiting without it") == 1  # one line says what was left behind
    assert "Traceback" not in log and "Transient error" not in log
