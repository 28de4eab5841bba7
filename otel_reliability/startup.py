"""The one start-up line: what this process runs with, on stderr, whatever the app's logging set-up.

    otel-reliability[4242] INFO: 0.1.0 started: service.name=shop.main; HTTP layer lean (auto: spans not
    exported); metrics prometheus http://localhost:9464/metrics; traces none (not recorded); health /api/health;
    11 instrumentors active

Printed once per server, after every instrumentor is loaded (``after_instrumentors``: the
``opentelemetry_post_instrument`` entry point, which ``configure()`` runs too): by a prefork master or
supervisor, not again by each of its workers, nor by multiprocessing's helper processes. Secrets never appear:
no header, no token, and an endpoint without its user:password or query string.
``OTEL_RELIABILITY_STARTUP_LINE=false`` silences it.

In a forking master (gunicorn, granian), the same moment imports what the instrumentors wait for
(``on_import.import_waiting``): its forked workers import the app, and each would otherwise import FastAPI and
SQLAlchemy itself at every recycle while requests wait.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping

from otel_reliability import config, console, semconv
from otel_reliability.version import __version__

_announced = False


def _exporters(env: Mapping[str, str], signal: str) -> list[str]:
    raw = env.get(f"OTEL_{signal}_EXPORTER", "").strip() or "otlp"  # the SDK's default
    return [n.strip() for n in raw.split(",") if n.strip()]


def _otlp(env: Mapping[str, str], signal: str) -> str:
    endpoint = env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip()
    protocol = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or "grpc"
    )
    if not endpoint:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if base:
            endpoint = base if protocol == "grpc" else base.rstrip("/") + f"/v1/{signal.lower()}"
        else:
            endpoint = "http://localhost:4317" if protocol == "grpc" else f"http://localhost:4318/v1/{signal.lower()}"
    return f"otlp/{protocol} {console.mask_url(endpoint)}"


def destinations(env: Mapping[str, str], signal: str) -> str:
    """Where ``signal`` (METRICS or TRACES) goes, in a few words."""
    names = _exporters(env, signal)
    if names == ["none"]:
        if signal == "TRACES" and env.get("OTEL_TRACES_SAMPLER", "").strip().lower() == "always_off":
            return "none (not recorded)"
        return "none"
    out = []
    for name in names:
        if name == "prometheus":
            host = env.get("OTEL_EXPORTER_PROMETHEUS_HOST", "").strip() or "localhost"
            port = env.get("OTEL_EXPORTER_PROMETHEUS_PORT", "").strip() or "9464"
            out.append(f"prometheus http://{host}:{port}/metrics")
        elif name == "otlp":
            out.append(_otlp(env, signal))
        elif name != "none":
            out.append(name)
    return ", ".join(out)


def _service_name(env: Mapping[str, str]) -> str:
    """The resource's service.name as the SDK set it (a gunicorn master has no SDK: the same rule from env)."""
    from opentelemetry import trace

    resource = getattr(trace.get_tracer_provider(), "resource", None)
    name = resource.attributes.get(semconv.ATTR_SERVICE_NAME) if resource is not None else None
    if name:
        return str(name)
    from opentelemetry.sdk.resources import Resource

    return str(Resource.create().attributes.get(semconv.ATTR_SERVICE_NAME, "unknown_service"))


def _health(env: Mapping[str, str], settings: config.Settings) -> str:
    disabled = {n.strip() for n in env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    if not settings.auto_mount or "reliability_health" in disabled:
        return f"health not mounted automatically (configure(app) mounts it at {settings.health_path})"
    return f"health {settings.health_path}"


def summary(env: Mapping[str, str], settings: config.Settings) -> str:
    """The line's text (without the ``otel-reliability[pid] INFO:`` head)."""
    from otel_reliability.distro import active_instrumentors
    from otel_reliability.instrumentation.http_server import current_layer, layer_reason

    count = len(active_instrumentors())
    parts = [
        f"{__version__} started: service.name={_service_name(env)}",
        f"HTTP layer {current_layer()} ({layer_reason()})",
        f"metrics {destinations(env, 'METRICS')}",
        f"traces {destinations(env, 'TRACES')}",
        _health(env, settings),
        f"{count} {'instrumentor' if count == 1 else 'instrumentors'} active",
    ]
    return "; ".join(parts)


def _is_worker_or_helper() -> bool:
    """A prefork worker (its master announced) or multiprocessing's resource tracker / forkserver."""
    from otel_reliability import launchers

    spawned_or_forked = launchers.is_spawned() or multiprocessing.parent_process() is not None
    return spawned_or_forked or launchers.is_multiprocessing_helper()


def after_instrumentors() -> None:
    """Entry point ``opentelemetry_post_instrument: otel_reliability``: every instrumentor is loaded."""
    from otel_reliability.instrumentation.http_server import our_distro

    if not our_distro():  # another distro was chosen: it says what it does
        return
    from otel_reliability import launchers

    if launchers.forking_master() is not None:
        # Its workers are forked and import the app: what they will import is imported (and patched) here once,
        # so that every worker, recycled ones too, starts with it (the master imported it before, through our
        # instrumentors; upstream's does for FastAPI).
        from otel_reliability.instrumentation import on_import

        on_import.import_waiting()
    announce()


def announce() -> None:
    """Print the line once, unless silenced."""
    global _announced
    if _announced:
        return
    _announced = True
    settings = config.settings()
    if not settings.startup_line or _is_worker_or_helper():
        return
    try:
        text = summary(os.environ, settings)
    except Exception as exc:  # the line is information: it must never stop the app
        text = f"{__version__} started (summary unavailable: {type(exc).__name__})"
    console.write("INFO", text)
