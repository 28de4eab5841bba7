"""Every ``OTEL_RELIABILITY_*`` environment variable, in one place.

Each variable is declared once in ``otel_reliability.config.variables``, with its default, the form it accepts
and what it means (the model and the shared parsers: ``otel_reliability.config.variable``). The
distro parses them at start-up (``load()``); a bad value stops start-up with one line that names the
variable, the bad value and the allowed form, so a typo never silently turns a feature off.

``load()`` takes any mapping, so tests pass a dict instead of patching ``os.environ``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from otel_reliability.config.variable import ConfigError, T, Variable
from otel_reliability.config.variables import (
    ADMIN_PATH,
    ADMIN_TOKEN,
    ADVISED_STATEMENT_TIMEOUT,
    AUTO_MOUNT,
    BREAKER_HTTP_MAPPING,
    CHECK_TIMEOUT,
    CPU_WARN_PERCENT,
    CRITICAL_BREAKERS,
    ERROR_MIN_REQUESTS,
    ERROR_RATE_THRESHOLD,
    ERROR_SPIKE_THRESHOLD,
    ERROR_WINDOW,
    EXPECTED_STATEMENT_TIMEOUT,
    FD_WARN_PERCENT,
    HEALTH_CACHE,
    HEALTH_PATH,
    HEALTH_TOKEN,
    HOST_DIR,
    HTTP_LAYER,
    HTTP_LAYERS,
    HTTP_MESSAGE_SPANS,
    MEMORY_WARN_PERCENT,
    POOL_WARN_UTILIZATION,
    PREFORK,
    SLO_AVAILABILITY,
    SLO_LATENCY_TARGET,
    SLO_LATENCY_THRESHOLD,
    SNAPSHOT_INTERVAL,
    STARTUP_LINE,
    STATEMENT_TIMEOUT_INTERVAL,
    STUCK_CHECK_INTERVAL,
    STUCK_THRESHOLD,
    VARIABLES,
)

_logger = logging.getLogger("otel_reliability")

__all__ = [
    "ADMIN_PATH",
    "ADMIN_TOKEN",
    "ADVISED_STATEMENT_TIMEOUT",
    "AUTO_MOUNT",
    "BREAKER_HTTP_MAPPING",
    "CHECK_TIMEOUT",
    "CPU_WARN_PERCENT",
    "CRITICAL_BREAKERS",
    "ERROR_MIN_REQUESTS",
    "ERROR_RATE_THRESHOLD",
    "ERROR_SPIKE_THRESHOLD",
    "ERROR_WINDOW",
    "EXPECTED_STATEMENT_TIMEOUT",
    "FD_WARN_PERCENT",
    "HEALTH_CACHE",
    "HEALTH_PATH",
    "HEALTH_TOKEN",
    "HOST_DIR",
    "HTTP_LAYER",
    "HTTP_LAYERS",
    "HTTP_MESSAGE_SPANS",
    "MEMORY_WARN_PERCENT",
    "POOL_WARN_UTILIZATION",
    "PREFORK",
    "SLO_AVAILABILITY",
    "SLO_LATENCY_TARGET",
    "SLO_LATENCY_THRESHOLD",
    "SNAPSHOT_INTERVAL",
    "STARTUP_LINE",
    "STATEMENT_TIMEOUT_INTERVAL",
    "STUCK_CHECK_INTERVAL",
    "STUCK_THRESHOLD",
    "VARIABLES",
    "ConfigError",
    "Settings",
    "Variable",
    "load",
    "log_effective",
    "set_settings",
    "settings",
]


@dataclass(frozen=True)
class Settings:
    """The parsed configuration. Field names are the variable names without the prefix, lower-cased."""

    health_path: str
    admin_path: str
    health_token: str | None
    admin_token: str | None
    error_window: int
    error_rate_threshold: float
    error_min_requests: int
    error_spike_threshold: int
    pool_warn_utilization: float
    stuck_threshold: float
    stuck_check_interval: float
    expected_statement_timeout: float | None
    statement_timeout_interval: float
    auto_mount: bool
    check_timeout: float
    health_cache: float
    snapshot_interval: float
    critical_breakers: frozenset[str]
    breaker_http_mapping: bool
    memory_warn_percent: float
    cpu_warn_percent: float
    fd_warn_percent: float
    http_layer: str
    prefork: bool
    host_dir: str | None
    slo_availability: float
    slo_latency_threshold: float
    slo_latency_target: float
    http_message_spans: bool
    startup_line: bool

    def describe(self) -> dict[str, str]:
        """The effective configuration as strings, secrets masked: safe to log."""
        out: dict[str, str] = {}
        for var in VARIABLES:
            value = getattr(self, _field_name(var))
            if var.secret:
                out[var.name] = "<set>" if value else "<unset>"
            elif value is None:
                out[var.name] = "<unset>"
            elif isinstance(value, frozenset):
                out[var.name] = ",".join(sorted(value))
            else:
                out[var.name] = str(value)
        return out


def _field_name(var: Variable[Any]) -> str:
    return var.name.removeprefix("OTEL_RELIABILITY_").lower()


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every variable from ``environ`` (default ``os.environ``); raise ConfigError on the first bad one."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for var in VARIABLES:
        raw = env.get(var.name)
        text = var.default if raw is None else raw.strip()
        try:
            values[_field_name(var)] = var.parse(text)
        except (ValueError, TypeError):
            # A secret is never echoed back, not even when it is the bad value.
            shown = "<hidden>" if var.secret else text
            raise ConfigError(var.name, shown, var.allowed) from None
    unknown = sorted(
        k for k in env if k.startswith("OTEL_RELIABILITY_") and k not in _KNOWN and not k.startswith(_TOOLING)
    )
    if unknown:
        raise ConfigError(unknown[0], env[unknown[0]], "one of the documented OTEL_RELIABILITY_* variables")
    for var in VARIABLES:
        if var.deprecated and var.name in env and var.name not in _warned:
            _warned.add(var.name)
            _logger.warning("otel-reliability: %s is deprecated and ignored: %s", var.name, var.deprecated)
    return Settings(**values)


_warned: set[str] = set()  # deprecated variables already warned about: once per process


_KNOWN = frozenset(v.name for v in VARIABLES)
# Read by the project's scripts and collector configs (build cache, collector-config/*.yaml: the agent's
# gateway address, the gateway's remote write URL), not by the package; documented in the README beside them.
_TOOLING = (
    "OTEL_RELIABILITY_CACHE",
    "OTEL_RELIABILITY_COLLECTOR_",
    "OTEL_RELIABILITY_GATEWAY_ENDPOINT",
    "OTEL_RELIABILITY_GATEWAY_INSECURE",
    "OTEL_RELIABILITY_REMOTE_WRITE_URL",
    "OTEL_RELIABILITY_TEST_",
)

assert {f.name for f in fields(Settings)} == {_field_name(v) for v in VARIABLES}, "config fields out of sync"

_current: Settings | None = None


def settings() -> Settings:
    """The process-wide settings, parsed once (the distro parses them first, at start-up)."""
    global _current
    if _current is None:
        _current = load()
    return _current


def set_settings(value: Settings) -> None:
    global _current
    _current = value


def current(var: Variable[T]) -> T:
    """``var`` parsed from the environment as it is now, not as ``settings()`` parsed it: a forked worker's
    settings are its master's, parsed before the master set what its workers need (``HOST_DIR``)."""
    text = os.environ.get(var.name, var.default).strip()
    try:
        return var.parse(text)
    except (ValueError, TypeError):
        raise ConfigError(var.name, "<hidden>" if var.secret else text, var.allowed) from None


def hand_down(var: Variable[Any], value: str) -> None:
    """Set ``var`` for every process this one starts from now on (forked or spawned workers)."""
    os.environ[var.name] = value


def log_effective(value: Settings) -> None:
    """Log the effective configuration once at INFO, secrets masked."""
    described = " ".join(f"{k}={v}" for k, v in value.describe().items())
    _logger.info("otel-reliability configuration: %s", described)
