"""Installed beside upstream's opentelemetry-distro, otel-reliability still works when chosen by name.

Both packages register an `opentelemetry_distro` and an `opentelemetry_configurator` entry point, and
opentelemetry-instrument takes the first it finds, in an order nobody controls. The README tells the user to
set OTEL_PYTHON_DISTRO=otel_reliability and OTEL_PYTHON_CONFIGURATOR=otel_reliability; this proves it works.
opentelemetry-distro is installed for this test only, into a cached folder put first on PYTHONPATH.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from tests.support import BIN, AppProcess, get_json, http, require, scrape, series_value, upstream_distro_dir


def test_both_distros_installed_ours_chosen_by_name(app_factory: Callable[..., AppProcess]) -> None:
    try:
        target = upstream_distro_dir()
    except RuntimeError as exc:
        require(False, str(exc))
    app = app_factory(
        "minimal_app:app",
        env={
            "PYTHONPATH": str(target),
            "OTEL_PYTHON_DISTRO": "otel_reliability",
            "OTEL_PYTHON_CONFIGURATOR": "otel_reliability",
        },
    )
    check = subprocess.run(
        [str(BIN / "python"), "-c", "from importlib.metadata import entry_points as e;"
         "print(sorted(p.name for p in e(group='opentelemetry_distro')))"],
        env={"PYTHONPATH": str(target)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "distro" in check.stdout and "otel_reliability" in check.stdout  # really both installed
    http("GET", app.url + "/items/7")
    assert series_value(
        scrape(app.metrics_port), "http_server_request_duration_seconds_count", http_route="/items/{item_id}"
    )
    status, body = get_json(app.url + "/api/health")
    assert status in (200, 503) and body["service"]["instance_id"]
    app.stop()
    assert "Failed to export" not in app.log() and "Transient error" not in app.log()
