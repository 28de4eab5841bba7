"""Every private attribute of another package that otel-reliability reads or writes: named here with what we
expect of it, a check of that shape on the installed version, and the public path taken when it does not hold.

A private attribute may be renamed by any release of its package. ``pyproject.toml`` pins the OpenTelemetry
packages to the minor releases the version matrix tests, but a user can install others. So each access that
matters for the data is a ``Private`` in ``GUARDED`` (the SDK's storage in ``upstream.sdk``, the suppression
keys and counters in ``upstream.runtime``, the breaker libraries in ``upstream.breakers``, the Prometheus
exporter's translation in ``upstream.exporters``, contrib's HTTP conventions and instrumentor flag in
``upstream.contrib``, SQLAlchemy's pool figures, pool name and dispatch clear in ``upstream.pools``, the SDK
tracing internals the lean SERVER span relies on in ``upstream.tracing``, uvicorn's signals in
``upstream.servers``): ``usable()`` runs its check once (at start-up from the configurator for the modules
already imported, before patching for an instrumentor's library, else at first use) and on a mismatch logs one
WARNING naming the attributes and the fallback; the callers then take the public path, slower or coarser, never
different data and never an error on the user's call path (where nothing public gives a figure, it is not
published: never a wrong one). The checks prove behaviour, not mere presence: values folded into a
scratch SDK histogram must equal ``record()`` of them, a view added to ``_sdk_config.views`` must rename a scratch
instrument, the suppression keys must agree with ``is_instrumentation_enabled()`` in both states, and so on.

The rest (``NOTED``) are read with a ``getattr`` default or an ``ImportError`` fallback at the one place that uses
them, each entry saying why it is not guarded; they are listed so that every foreign private name is in this one
module (tests/test_upstream.py reads the package's source and fails on one that is not).
"""

from __future__ import annotations

from otel_reliability.upstream import breakers, contrib, exporters, pools, runtime, sdk, servers, tracing
from otel_reliability.upstream._registry import GUARDED, Private, check_all, check_before_patching, guard, usable

# Read where they are used, each with a default or an ImportError fallback that keeps the data right
# (module or class: attributes -> what happens when they are gone).
NOTED: dict[str, tuple[tuple[str, ...], str]] = {
    # Stay unchecked on purpose: there is no public path, and every OpenTelemetry distro depends on the same names.
    "opentelemetry.sdk._configuration": (
        ("_OTelSDKConfigurator", "_initialize_components", "_configuration"),
        "the distro mechanism every OpenTelemetry distro uses (opentelemetry-distro subclasses the same class and "
        "calls the same function); no public API exists. A rename is loud, not silent: our configurator cannot "
        "load and opentelemetry-instrument logs the ImportError. Pinned to the tested minor releases (the matrix)",
    ),
    "opentelemetry.instrumentation.auto_instrumentation": (
        ("_load", "_load_instrumentors"),
        "configure() without opentelemetry-instrument loads the instrumentors as opentelemetry-instrument does "
        "(no public loader); a rename raises ImportError in configure(), never silently; pinned as above",
    ),
    "opentelemetry.sdk (logs, shutdown)": (
        ("_logs", "_atexit_handler", "_shutdown"),
        "_logs is the SDK's logs package itself (its only name); without _atexit_handler the SDK's own atexit "
        "shutdown stays (a second, unbounded one: no data lost); _shutdown only skips a closed exporter's watch",
    ),
    "sys, os": (("_getframe", "_exit"), "CPython's documented private-named functions"),
    "opentelemetry.semconv": (
        ("_incubating",),
        "the development names (db.client.connection.*, process.*) as the package publishes them, imported only "
        "by otel_reliability.semconv; pinned with the instrumentation packages, tests/test_semconv.py checks each "
        "(a rename is an ImportError at start-up, never silent)",
    ),
    # Only our own log lines or an optional speed-up depend on these: no figure is lost or wrong without them.
    "opentelemetry.sdk.trace (the SDK's span metrics)": (
        ("_tracer_metrics",),
        "read with a default: a tracer whose span metrics are not the no-op (or unknown) gets the SDK's own spans, "
        "which count themselves; the lean tracer never runs beside them",
    ),
    "opentelemetry.exporter.otlp": (
        ("_log_exporter", "_common", "_OTLPHTTPClient", "_preferred_temporality", "_endpoint"),
        "export_logs: without them the exporters log as upstream does (one line per failure), the endpoint is "
        "named 'the OTLP endpoint', and delta temporality is not told apart in the WARNING (not yet checked)",
    ),
    "opentelemetry.instrumentation.fastapi": (
        ("_is_instrumented_by_opentelemetry",),
        "FastAPIInstrumentor's flag on an app, read to skip a second instrument_app(); that call checks the same "
        "flag itself, so a rename costs one upstream log line, never data",
    ),
    "fastapi.telemetry": (
        ("_api", "_RequestTelemetry", "_route_selected", "_telemetry"),
        "FastAPI's own request record: checked when FastAPI is imported (http_server.verify_lean: the record's "
        "parameters; one WARNING, then contrib's layer, the same routes). A signature check, not yet a "
        "behaviour check through this registry",
    ),
    "purgatory.service": (
        ("_sync", "_async"),
        "the breaker classes' modules; without them purgatory is not instrumented (one log line), no figure wrong",
    ),
    "purgatory (message bus)": (
        ("SyncMessageRegistry.handle", "AsyncMessageRegistry.handle"),
        "public methods of purgatory's bus classes, wrapped instead of a hook in the public factory.listeners",
    ),
    "circuitbreaker (its error's breaker)": (
        ("_circuit_breaker",),
        "read with a getattr default, only to name the breaker in a 503 where our own tag is missing",
    ),
}

__all__ = [
    "GUARDED",
    "NOTED",
    "Private",
    "breakers",
    "check_all",
    "check_before_patching",
    "contrib",
    "exporters",
    "guard",
    "pools",
    "runtime",
    "sdk",
    "servers",
    "tracing",
    "usable",
]
