"""Every private attribute of another package that otel-reliability reads or writes: named here with what we
expect of it, a check of that shape on the installed version, and the public path taken when it does not hold.

A private attribute may be renamed by any release of its package. ``pyproject.toml`` pins the OpenTelemetry
packages to the minor releases the version matrix tests, but a user can install others. So each access that
matters for the data is a ``Private`` in ``GUARDED`` (the SDK's storage in ``upstream.sdk``, the suppression
keys and counters in ``upstream.runtime``, the breaker libraries in ``upstream.breakers``, the Prometheus
exporter's translation in ``upstream.exporters``): ``usable()`` runs its
check once (at start-up from the configurator, else at first use) and on a mismatch logs one WARNING naming the
attributes and the fallback; the callers then take the public path, slower or coarser, never different data and
never an error on the user's call path. The checks prove behaviour, not mere presence: values folded into a
scratch SDK histogram must equal ``record()`` of them, a view added to ``_sdk_config.views`` must rename a scratch
instrument, the suppression keys must agree with ``is_instrumentation_enabled()`` in both states, and so on.

The rest (``NOTED``) are read with a ``getattr`` default or an ``ImportError`` fallback at the one place that uses
them; they are listed so that every foreign private name is in this one module (tests/test_upstream.py reads the
package's source and fails on one that is not).
"""

from __future__ import annotations

from otel_reliability.upstream import breakers, contrib, exporters, runtime, sdk
from otel_reliability.upstream._registry import GUARDED, Private, check_all, guard, usable

# Read where they are used, each with a default or an ImportError fallback that keeps the data right
# (module or class: attributes -> what happens when they are gone).
NOTED: dict[str, tuple[tuple[str, ...], str]] = {
    "opentelemetry.sdk._configuration": (
        ("_OTelSDKConfigurator", "_initialize_components", "_configuration"),
        "the distro mechanism every OpenTelemetry distro uses; covered by the version pins and the matrix",
    ),
    "opentelemetry.instrumentation.auto_instrumentation": (
        ("_load", "_load_instrumentors"),
        "configure() without opentelemetry-instrument loads the instrumentors with it; pinned as above",
    ),
    "opentelemetry.sdk (logs, shutdown)": (
        ("_logs", "_atexit_handler", "_shutdown"),
        "the logs API lives in a private-named module; without _atexit_handler the SDK's own atexit stays",
    ),
    "opentelemetry.exporter.otlp": (
        ("_log_exporter", "_common", "_OTLPHTTPClient", "_preferred_temporality", "_endpoint"),
        "export_logs: without them the exporters log as upstream does (one line per failure)",
    ),
    "opentelemetry.instrumentation.fastapi": (
        ("_is_instrumented_by_opentelemetry",),
        "FastAPIInstrumentor's flag on an app, read to skip a second instrument_app(); that call checks the same "
        "flag itself, so a rename costs one upstream log line, never data",
    ),
    "fastapi.telemetry": (
        ("_api", "_RequestTelemetry", "_route_selected", "_telemetry"),
        "FastAPI's own request telemetry: used only where all are present, else the contrib ASGI layer",
    ),
    "purgatory.service": (
        ("_sync", "_async"),
        "the breaker classes' modules; without them purgatory is not instrumented (one log line)",
    ),
    "sqlalchemy.pool": (
        ("_max_overflow", "_all_conns", "_orig_logging_name", "_connection_record", "_ConnectionRecord__pool"),
        "pool figures: read only where present (QueuePool, AsyncAdaptedQueuePool); the pool name falls back",
    ),
    "circuitbreaker": (
        ("_fallback_function", "_circuit_breaker"),
        "a refusal served by a fallback is counted through it only where the attribute is present",
    ),
    "purgatory (message bus)": (
        ("SyncMessageRegistry.handle", "AsyncMessageRegistry.handle"),
        "public methods of purgatory's bus classes, wrapped instead of a hook in the public factory.listeners",
    ),
    "sqlalchemy.event": (
        ("_clear", "_Dispatch"),
        "Pool.dispatch._clear() is wrapped to listen our pool listeners again; without it they come back at the "
        "next collection (pool/_armed.py)",
    ),
    "uvicorn": (("_captured_signals",), "without it uvicorn re-raises the signal as before"),
    "opentelemetry.sdk.trace (the lean tracer's SERVER and statement spans)": (
        (
            "_span_limits",
            "_is_enabled",
            "_tracer_metrics",
            "_on_ending",
            "_immutable",
            "_name",
            "_context",
            "_kind",
            "_parent",
            "_start_time",
            "_end_time",
            "_attributes",
            "_events",
            "_links",
            "_resource",
            "_status",
            "_instrumentation_scope",
            "_instrumentation_info",
        ),
        "LeanSpan is a ReadableSpan filled in place: LeanTracer.for_tracer checks a probe span's properties once; "
        "on a mismatch (or without the limits, scope and _is_enabled, or with the SDK's span metrics on: a "
        "_tracer_metrics that is not the no-op) the SDK's own tracer makes the spans",
    ),
    "opentelemetry.semconv": (
        ("_incubating",),
        "the development names (db.client.connection.*, process.*) as the package publishes them, imported only "
        "by otel_reliability.semconv; pinned with the instrumentation packages, tests/test_semconv.py checks each",
    ),
    "sys, os": (("_getframe", "_exit"), "CPython's documented private-named functions"),
}

__all__ = [
    "GUARDED",
    "NOTED",
    "Private",
    "breakers",
    "check_all",
    "contrib",
    "exporters",
    "guard",
    "runtime",
    "sdk",
    "usable",
]
