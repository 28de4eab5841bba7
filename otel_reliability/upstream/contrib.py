"""opentelemetry-python-contrib's private names we build on (see ``otel_reliability.upstream``): the stable HTTP
conventions' mode of ``collect_request_attributes`` (the lean HTTP layer's SERVER span attributes), and
``BaseInstrumentor``'s singleton and instrumented flag (whether upstream's system metrics already emit a name)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otel_reliability.upstream._registry import guard, usable

ASGI = "opentelemetry.instrumentation.asgi"
_STABLE = {"http.request.method": "GET", "url.scheme": "http", "url.path": "/p", "network.protocol.version": "1.1"}
_OLD = ("http.method", "http.scheme", "http.target", "http.flavor")


def request_attributes() -> Callable[[Any], dict[str, Any]]:
    """contrib's attribute builder for the stable HTTP conventions (its mode enum is not public)."""
    from opentelemetry.instrumentation._semconv import _StabilityMode
    from opentelemetry.instrumentation.asgi import collect_request_attributes

    mode = _StabilityMode.HTTP

    def collect(scope: Any) -> dict[str, Any]:
        return collect_request_attributes(scope, mode)  # type: ignore[no-any-return]

    return collect


@guard(
    "contrib.http_semconv",
    ASGI,
    ("_semconv", "_StabilityMode.HTTP"),
    "collect_request_attributes(scope, _StabilityMode.HTTP) gives the stable HTTP attributes "
    "(http.request.method, url.scheme, url.path, network.protocol.version) and none of the old ones",
    "the contrib HTTP layer (its own spans and attributes)",
)
def _check_http_semconv() -> bool:
    scope = {
        "type": "http",
        "scheme": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/p",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.2", 5555),
    }
    found = request_attributes()(scope)
    return all(found.get(k) == v for k, v in _STABLE.items()) and not any(k in found for k in _OLD)


@guard(
    "contrib.instrumented",
    "opentelemetry.instrumentation.instrumentor",
    (
        "BaseInstrumentor._instance",
        "BaseInstrumentor._is_instrumented_by_opentelemetry",
        "SystemMetricsInstrumentor._config",
    ),
    "each instrumentor class's one instance as _instance (BaseInstrumentor.__new__), whose "
    "_is_instrumented_by_opentelemetry follows instrument() and uninstrument() as the public "
    "is_instrumented_by_opentelemetry does (and SystemMetricsInstrumentor's _config: a dict keyed by name)",
    "the public is_instrumented_by_opentelemetry of the class's one instance (BaseInstrumentor.__new__ returns it)",
)
def _check_instrumented() -> bool:
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

    class Probe(BaseInstrumentor):  # type: ignore[misc]
        def instrumentation_dependencies(self) -> list[str]:
            return []

        def _instrument(self, **kwargs: Any) -> None:
            pass

        def _uninstrument(self, **kwargs: Any) -> None:
            pass

    probe = Probe()
    states = [probe._is_instrumented_by_opentelemetry == probe.is_instrumented_by_opentelemetry is False]
    probe.instrument()
    states.append(probe._is_instrumented_by_opentelemetry == probe.is_instrumented_by_opentelemetry is True)
    probe.uninstrument()
    states.append(probe._is_instrumented_by_opentelemetry == probe.is_instrumented_by_opentelemetry is False)
    return Probe._instance is probe and Probe() is probe and all(states)


def system_metrics_names(cls: Any, names: tuple[str, ...]) -> set[str]:
    """Which of ``names`` an instrumented upstream ``SystemMetricsInstrumentor`` (``cls``) emits. Where its
    ``_config`` cannot be read, all of them: ours are then left out, never two producers of one name."""
    if usable("contrib.instrumented"):
        instance = cls._instance
        instrumented = instance is not None and bool(instance._is_instrumented_by_opentelemetry)
    else:
        instance = cls.__new__(cls)  # BaseInstrumentor.__new__: the class's one instance
        instrumented = bool(instance.is_instrumented_by_opentelemetry)
    if not instrumented:
        return set()
    config = getattr(instance, "_config", None)
    if not isinstance(config, dict):
        return set(names)
    return {name for name in names if name in config}
