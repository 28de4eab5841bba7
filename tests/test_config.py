"""Configuration: every OTEL_RELIABILITY_* variable is parsed in one place; a bad value stops start-up."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from otel_reliability import config
from otel_reliability.distro import environment_defaults, excluded_urls, guess_service_name
from tests.support import BIN

BAD_VALUES = {
    "OTEL_RELIABILITY_HEALTH_PATH": "api/health",
    "OTEL_RELIABILITY_ADMIN_PATH": "/admin//x",
    "OTEL_RELIABILITY_HEALTH_TOKEN": "short",
    "OTEL_RELIABILITY_ADMIN_TOKEN": "has space in it",
    "OTEL_RELIABILITY_ERROR_WINDOW": "5m",
    "OTEL_RELIABILITY_ERROR_RATE_THRESHOLD": "150",
    "OTEL_RELIABILITY_ERROR_MIN_REQUESTS": "0",
    "OTEL_RELIABILITY_ERROR_SPIKE_THRESHOLD": "ten",
    "OTEL_RELIABILITY_POOL_WARN_UTILIZATION": "-1",
    "OTEL_RELIABILITY_STUCK_THRESHOLD": "2h",
    "OTEL_RELIABILITY_STUCK_CHECK_INTERVAL": "0",
    "OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT": "300000ms",
    "OTEL_RELIABILITY_STATEMENT_TIMEOUT_INTERVAL": "never",
    "OTEL_RELIABILITY_AUTO_MOUNT": "maybe",
    "OTEL_RELIABILITY_CHECK_TIMEOUT": "0",
    "OTEL_RELIABILITY_HEALTH_CACHE": "-1",
    "OTEL_RELIABILITY_SNAPSHOT_INTERVAL": "nan",
    "OTEL_RELIABILITY_CRITICAL_BREAKERS": "gemini, bad name",
    "OTEL_RELIABILITY_BREAKER_HTTP_MAPPING": "yes please",
    "OTEL_RELIABILITY_MEMORY_WARN_PERCENT": "101",
    "OTEL_RELIABILITY_CPU_WARN_PERCENT": "x",
    "OTEL_RELIABILITY_FD_WARN_PERCENT": "",
    "OTEL_RELIABILITY_HTTP_LAYER": "fast",
    "OTEL_RELIABILITY_PREFORK": "sometimes",
    "OTEL_RELIABILITY_STARTUP_LINE": "quiet",
    "OTEL_RELIABILITY_HOST_DIR": "relative/dir",
    "OTEL_RELIABILITY_SLO_AVAILABILITY": "100",
    "OTEL_RELIABILITY_SLO_LATENCY_THRESHOLD": "0.3",
    "OTEL_RELIABILITY_SLO_LATENCY_TARGET": "99.9999",
    "OTEL_RELIABILITY_HTTP_MESSAGE_SPANS": "some",
}


def test_every_variable_has_a_bad_value_case() -> None:
    assert set(BAD_VALUES) == {v.name for v in config.VARIABLES}


def test_defaults_match_the_contract() -> None:
    s = config.load({})
    assert (s.health_path, s.admin_path) == ("/api/health", "/api/admin/monitoring")
    assert (s.health_token, s.admin_token) == (None, None)
    assert (s.error_window, s.error_rate_threshold, s.pool_warn_utilization) == (300, 1.0, 80.0)
    # No statement_timeout is expected unless declared (issue 23): 300 s is what the advice suggests.
    assert (s.stuck_threshold, s.expected_statement_timeout, s.auto_mount) == (7200.0, None, True)
    assert config.ADVISED_STATEMENT_TIMEOUT == 300.0
    assert (s.slo_availability, s.slo_latency_threshold, s.slo_latency_target) == (99.9, 0.5, 99.0)


def test_a_latency_threshold_is_a_bound_of_the_http_duration_histogram() -> None:
    from otel_reliability import semconv

    assert config.variables._HTTP_BUCKETS == semconv.HTTP_SERVER_DURATION_BUCKETS
    assert config.load({"OTEL_RELIABILITY_SLO_LATENCY_THRESHOLD": "1.0"}).slo_latency_threshold == 1


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_bad_value_names_the_variable_the_value_and_the_allowed_form(name: str) -> None:
    var = next(v for v in config.VARIABLES if v.name == name)
    with pytest.raises(config.ConfigError) as err:
        config.load({name: BAD_VALUES[name]})
    message = str(err.value)
    assert "\n" not in message
    assert name in message and var.allowed in message
    if var.secret:
        assert BAD_VALUES[name] not in message  # a token is never echoed, even a wrong one
    else:
        assert repr(BAD_VALUES[name].strip()) in message


def test_a_misspelt_variable_is_named_not_ignored() -> None:
    with pytest.raises(config.ConfigError, match="OTEL_RELIABILITY_EROR_WINDOW"):
        config.load({"OTEL_RELIABILITY_EROR_WINDOW": "60"})


def test_effective_configuration_masks_tokens() -> None:
    described = config.load({"OTEL_RELIABILITY_HEALTH_TOKEN": "health-token-123"}).describe()
    assert described["OTEL_RELIABILITY_HEALTH_TOKEN"] == "<set>"
    assert described["OTEL_RELIABILITY_ADMIN_TOKEN"] == "<unset>"
    assert "health-token-123" not in repr(described)


def test_distro_defaults_only_where_the_user_set_nothing() -> None:
    settings = config.load({})
    env = {"OTEL_TRACES_EXPORTER": "console"}
    applied = environment_defaults(env, settings)
    assert env["OTEL_TRACES_EXPORTER"] == "console" and "OTEL_TRACES_EXPORTER" not in applied
    assert env["OTEL_METRICS_EXPORTER"] == "prometheus"
    assert env["OTEL_LOGS_EXPORTER"] == "none"
    assert env["OTEL_SEMCONV_STABILITY_OPT_IN"] == "http"
    assert env["OTEL_PYTHON_FASTAPI_EXCLUDED_URLS"] == excluded_urls(settings)

    with_collector = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    environment_defaults(with_collector, settings)
    assert [with_collector[f"OTEL_{s}_EXPORTER"] for s in ("TRACES", "METRICS", "LOGS")] == ["otlp"] * 3

    generic = {"OTEL_PYTHON_EXCLUDED_URLS": "ping"}
    environment_defaults(generic, settings)
    assert "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS" not in generic  # the user's generic list wins


def test_service_name_defaults_to_the_app_module_unless_set(tmp_path: Path) -> None:
    settings = config.load({})
    env: dict[str, str] = {}
    environment_defaults(env, settings, ["uvicorn", "--port", "8000", "shop.main:app"])
    assert env["OTEL_SERVICE_NAME"] == "shop.main"
    mine = {"OTEL_SERVICE_NAME": "checkout"}
    environment_defaults(mine, settings, ["gunicorn", "shop.main:create_app()"])
    assert mine["OTEL_SERVICE_NAME"] == "checkout"
    by_resource = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=billing"}
    environment_defaults(by_resource, settings, ["uvicorn", "shop.main:app"])
    assert "OTEL_SERVICE_NAME" not in by_resource
    assert guess_service_name(["python", "-c", "print(1)"], tmp_path) is None


def test_excluded_urls_match_health_and_metrics_but_not_lookalikes() -> None:
    import re

    pattern = re.compile("|".join(excluded_urls(config.load({})).split(",")))
    for url in ("http://h/api/health", "http://h/api/health/pool", "http://h/metrics", "http://h/api/health?x=1"):
        assert pattern.search(url), url
    for url in ("http://h/api/healthcheck", "http://h/items/metrics-report"):
        assert not pattern.search(url), url


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_bad_value_stops_start_up_under_opentelemetry_instrument(name: str) -> None:
    proc = subprocess.run(
        [str(BIN / "opentelemetry-instrument"), str(BIN / "python"), "-c", "print('app started')"],
        env={"PATH": str(BIN), name: BAD_VALUES[name]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "app started" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"otel-reliability: {name}="), proc.stderr


def test_bad_prometheus_port_stops_start_up() -> None:
    proc = subprocess.run(
        [str(BIN / "opentelemetry-instrument"), str(BIN / "python"), "-c", "print('app started')"],
        env={"PATH": str(BIN), "OTEL_EXPORTER_PROMETHEUS_PORT": "94640"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "OTEL_EXPORTER_PROMETHEUS_PORT='94640'" in proc.stderr


def test_a_deprecated_variable_still_starts_but_says_once_that_it_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """0.1.0 accepted OTEL_RELIABILITY_STATEMENT_TIMEOUT_INTERVAL: a set-up that sets it keeps starting, and
    learns that it does nothing."""
    config._warned.discard(config.STATEMENT_TIMEOUT_INTERVAL.name)
    with caplog.at_level(logging.WARNING, logger="otel_reliability"):
        config.load({"OTEL_RELIABILITY_STATEMENT_TIMEOUT_INTERVAL": "60"})
        config.load({"OTEL_RELIABILITY_STATEMENT_TIMEOUT_INTERVAL": "60"})
        config.load({})
    warnings = [r.getMessage() for r in caplog.records if "STATEMENT_TIMEOUT_INTERVAL" in r.getMessage()]
    assert len(warnings) == 1 and "deprecated and ignored" in warnings[0]


def test_current_parses_a_variable_as_the_environment_says_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked worker's settings are its master's: what the master handed down after parsing shows here."""
    monkeypatch.setenv(config.HOST_DIR.name, "")  # restored after the test, whatever hand_down sets
    assert config.current(config.HOST_DIR) is None
    config.hand_down(config.HOST_DIR, "/tmp/otel-reliability-host-x")
    assert config.current(config.HOST_DIR) == "/tmp/otel-reliability-host-x"
    monkeypatch.setenv(config.PREFORK.name, "off")
    assert config.current(config.PREFORK) is False
    monkeypatch.setenv(config.PREFORK.name, "maybe")
    with pytest.raises(config.ConfigError, match="OTEL_RELIABILITY_PREFORK"):
        config.current(config.PREFORK)
