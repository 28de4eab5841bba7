"""The distro: sane defaults for ``opentelemetry-instrument``, set only where the user set nothing.

Upstream's defaults are traps for a service owner: OTLP to a collector that is often not running (an error
line every export interval), HTTP metrics in the old semantic conventions, and per-ASGI-message spans that
cost throughput and tell nobody anything. Ours:

- ``OTEL_SEMCONV_STABILITY_OPT_IN=http``: ``http.server.request.duration`` with ``http.route``,
  ``http.response.status_code`` and ``error.type``, the series the error rate is computed from.
- no ``OTEL_EXPORTER_OTLP_ENDPOINT``: metrics by the Prometheus exporter (:9464), traces and logs not
  exported (and, while traces go nowhere, spans not recorded: ``OTEL_TRACES_SAMPLER=always_off``); with an
  endpoint: OTLP for all three signals.
- the health and metrics paths excluded from request metrics and spans (FastAPI only, so an HTTP client
  calling another service's health endpoint is still traced).
- ``OTEL_PYTHON_CONFIGURATOR=otel_reliability``, so ours is picked when another configurator is installed.
- FastAPI traced without the ``receive``/``send`` spans (one span per ASGI message; a third of the throughput
  of a small route): ``OTEL_RELIABILITY_HTTP_MESSAGE_SPANS=true`` brings them back (and the contrib layer).
- ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=sqlalchemy``: statements are traced by ``reliability_statements``;
  upstream's SQLAlchemy instrumentor, if installed, would trace them a second time (in the old conventions,
  with literal values in the text), add its own pool metric beside ours and, on SQLAlchemy 2.1, log that it
  refuses the version. If you set the variable yourself, upstream's is still skipped while ours is enabled.
- one HTTP layer per FastAPI request (``OTEL_RELIABILITY_HTTP_LAYER``): the lean middleware of
  ``instrumentation/http_server.py`` (the request histogram and, while spans may be sampled, the SERVER span)
  instead of the contrib instrumentation, and FastAPI's native telemetry layer switched off.

The user's environment always wins. A bad ``OTEL_RELIABILITY_*`` value stops start-up with one line.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

from otel_reliability import changes, config, console
from otel_reliability.instrumentation import on_import
from otel_reliability.launchers import guess_service_name

_logger = logging.getLogger("otel_reliability")

PROMETHEUS_PORT = "OTEL_EXPORTER_PROMETHEUS_PORT"
UPSTREAM_SQLALCHEMY = "sqlalchemy"  # entry point of opentelemetry-instrumentation-sqlalchemy
STATEMENTS = "reliability_statements"


def disabled_instrumentations(env: MutableMapping[str, str]) -> set[str]:
    """The entry point names in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``, as opentelemetry-instrument reads them."""
    return {name.strip() for name in env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",") if name.strip()}


def environment_defaults(
    env: MutableMapping[str, str], settings: config.Settings, argv: list[str] | None = None
) -> dict[str, str]:
    """Set our defaults in ``env`` where unset; return what was set."""
    argv = sys.argv if argv is None else argv
    applied: dict[str, str] = {}

    def default(name: str, value: str) -> None:
        if not env.get(name, "").strip():
            env[name] = value
            applied[name] = value

    default("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    if "service.name=" not in env.get("OTEL_RESOURCE_ATTRIBUTES", "") and (name := guess_service_name(argv)):
        # the app's module, the same under every launcher (otel_reliability.launchers), inherited by workers
        default("OTEL_SERVICE_NAME", name)
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        for signal in ("TRACES", "METRICS", "LOGS"):
            default(f"OTEL_{signal}_EXPORTER", "otlp")
    else:
        default("OTEL_METRICS_EXPORTER", "prometheus")
        default("OTEL_TRACES_EXPORTER", "none")
        default("OTEL_LOGS_EXPORTER", "none")
        if env["OTEL_TRACES_EXPORTER"] == "none":
            # Spans nobody exports are pure cost (about half of an instrumented call): don't record them, nor
            # look for exemplars that would point at them.
            default("OTEL_TRACES_SAMPLER", "always_off")
            default("OTEL_METRICS_EXEMPLAR_FILTER", "always_off")
    default("OTEL_PYTHON_CONFIGURATOR", "otel_reliability")
    default("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", UPSTREAM_SQLALCHEMY)
    if not env.get("OTEL_PYTHON_EXCLUDED_URLS", "").strip():
        default("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", excluded_urls(settings))
    if importlib.util.find_spec("opentelemetry.instrumentation.system_metrics") is not None:
        # Upstream's system-metrics instrumentor is installed too: it keeps its names, we keep ours.
        from otel_reliability.instrumentation.process import exclude_from_upstream

        applied["OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS"] = exclude_from_upstream(env)
    return applied


def excluded_urls(settings: config.Settings) -> str:
    """Regexes (searched in the full URL) for the health, admin and metrics paths, and nothing else."""
    paths = (settings.health_path, settings.admin_path, "/metrics")
    return ",".join(f"{re.escape(p)}(?:/|\\?|$)" for p in paths)


def validate_otel_environment(env: MutableMapping[str, str]) -> None:
    """The few standard variables we act on ourselves get the same one-line error as ours."""
    raw = env.get(PROMETHEUS_PORT)
    if raw is not None:
        try:
            port = int(raw)
            if not 0 < port < 65536:
                raise ValueError(raw)
        except ValueError:
            raise config.ConfigError(PROMETHEUS_PORT, raw, "a TCP port between 1 and 65535") from None


def load_settings_or_exit(env: MutableMapping[str, str]) -> config.Settings:
    """Parse the configuration; on a bad value print one line and stop the process (exit code 2)."""
    try:
        settings = config.load(env)
        validate_otel_environment(env)
    except config.ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        sys.stderr.flush()
        # SystemExit would be swallowed by site.py's sitecustomize guard or by opentelemetry-instrument's
        # broad except, leaving the app running uninstrumented: a typo must not silently turn features off.
        os._exit(2)
    return settings


_active: list[str] = []


def active_instrumentors() -> list[str]:
    """The entry points activated in this process, in load order (for the start-up line)."""
    return list(_active)


class ReliabilityDistro(BaseDistro):
    """Entry point ``opentelemetry_distro: otel_reliability``."""

    def _configure(self, **kwargs: Any) -> None:
        console.install()  # our warnings in one format, from the first one on
        settings = load_settings_or_exit(os.environ)
        config.set_settings(settings)
        applied = environment_defaults(os.environ, settings)
        config.log_effective(settings)
        from otel_reliability.instrumentation.http_server import current_layer, our_distro_configured

        our_distro_configured()  # decided on the environment as it is now, with our defaults in it
        _logger.info("otel-reliability: FastAPI HTTP layer: %s", current_layer())
        if applied:
            _logger.info(
                "otel-reliability defaults applied: %s", " ".join(f"{k}={v}" for k, v in sorted(applied.items()))
            )

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        # An instrumentor that became active changes what health shows (its metrics exist from now on): no view
        # may answer from a collection made before it.
        try:
            if self._load(entry_point, **kwargs) and entry_point.name not in _active:
                _active.append(entry_point.name)
        finally:
            changes.mark_changed()

    def _load(self, entry_point: Any, **kwargs: Any) -> bool:
        """Activate one instrumentor; whether it is active (False: skipped on purpose, or failed)."""
        if entry_point.name == "fastapi":
            from otel_reliability.instrumentation.http_server import current_layer

            if current_layer() != "contrib":
                # One HTTP layer per request: the lean middleware or FastAPI's own (reliability_http) instead.
                return False
            if not config.settings().http_message_spans:
                kwargs.setdefault("exclude_spans", ["receive", "send"])
            # Upstream's module imports FastAPI (and Starlette, pydantic, anyio): loaded when the program
            # imports FastAPI, so a program (or a test runner) that never does pays nothing for it.
            load = super().load_instrumentor
            return on_import.when_imported("fastapi", lambda _module: load(entry_point, **kwargs)) is not None
        if entry_point.name == UPSTREAM_SQLALCHEMY and STATEMENTS not in disabled_instrumentations(os.environ):
            # One instrumentor per concern: ours traces statements (module docstring); the user's own
            # OTEL_PYTHON_DISABLED_INSTRUMENTATIONS may not list upstream's.
            _logger.info(
                "otel-reliability: upstream's sqlalchemy instrumentation skipped; statements are traced by %s "
                "(disable %s to use upstream's instead)",
                STATEMENTS,
                STATEMENTS,
            )
            return False
        if not entry_point.name.startswith("reliability_"):
            super().load_instrumentor(entry_point, **kwargs)
            return True
        # Ours take the settings parsed at start-up as an argument (contrib style: instrument(**kwargs)), so
        # no instrumentor reads a module global, and a test passes its own Settings.
        kwargs.setdefault("settings", config.settings())
        try:
            super().load_instrumentor(entry_point, **kwargs)
        except Exception:
            # opentelemetry-instrument aborts every later instrumentor on an exception: one broken
            # instrumentor of ours must not take the app's HTTP instrumentation and health routes with it.
            _logger.exception(
                "otel-reliability: instrumentor %s failed and is skipped (disable it with "
                "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=%s)",
                entry_point.name,
                entry_point.name,
            )
            return False
        return True
