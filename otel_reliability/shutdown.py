"""A final export on shutdown, bounded in time: the last second's counts reach the collector, and a collector
that is down does not hold the process.

Why this is needed (measured with uvicorn 0.54 and gunicorn 27 + UvicornWorker, OTLP, 60 s export interval):
on SIGTERM uvicorn drains requests, runs the lifespan shutdown, then re-raises SIGTERM with the default handler
restored, so the process dies *by the signal*: no ``atexit`` handler runs, and the SDK's own final export
(registered with ``atexit``) never happens. Every request since the last periodic export is lost (25 of 25 in
the measurement), under uvicorn and under gunicorn alike. And where ``atexit`` does run, the SDK waits for an
unreachable collector for as long as the exporter's retries last (10 s per signal by default, 30 s for all three).

What this module does:
- ``uvicorn.server.Server.shutdown`` is wrapped (when uvicorn is imported): once it has drained the requests
  of a server stopping on a signal, the providers are shut down, which makes each periodic metric reader and
  batch processor export what it holds; then uvicorn goes on and re-raises the signal;
- the same runs from ``atexit`` for servers that exit normally (registered after the SDK's providers, so it
  runs before their own handlers, which it removes);
- either way it runs once, metrics first (the counts are what a dashboard misses), then traces, then logs,
  each in a daemon thread, all within ``FINAL_EXPORT_TIMEOUT`` seconds; what has not finished by then is left
  behind with one WARNING line, and the process exits.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from otel_reliability import threads
from otel_reliability.upstream import servers as upstream_servers

__all__ = ["FINAL_EXPORT_TIMEOUT", "final_export", "install"]

_logger = logging.getLogger("otel_reliability.shutdown")

FINAL_EXPORT_TIMEOUT = 2.0
"""Seconds the final export may take in total before the process exits without it."""

_done = threading.Event()
_lock = threading.Lock()


def _providers() -> list[tuple[str, Any, Callable[[float], Any]]]:
    from opentelemetry import metrics, trace
    from opentelemetry._logs import get_logger_provider

    out: list[tuple[str, Any, Callable[[float], Any]]] = []
    meter_provider = metrics.get_meter_provider()
    if hasattr(meter_provider, "shutdown"):
        out.append(("metrics", meter_provider, lambda s: meter_provider.shutdown(timeout_millis=s * 1000)))
    tracer_provider = trace.get_tracer_provider()
    if hasattr(tracer_provider, "shutdown"):
        out.append(("traces", tracer_provider, lambda s: tracer_provider.shutdown()))
    logger_provider = get_logger_provider()
    if hasattr(logger_provider, "shutdown"):
        out.append(("logs", logger_provider, lambda s: logger_provider.shutdown()))
    return out


def final_export(timeout: float = FINAL_EXPORT_TIMEOUT) -> dict[str, bool]:
    """Shut the SDK providers down (each exports what it holds) within ``timeout`` seconds; runs once.

    Returns, per signal, whether its shutdown finished in time (empty when it already ran).
    """
    with _lock:
        if _done.is_set():
            return {}
        _done.set()
    deadline = time.monotonic() + timeout
    finished: dict[str, bool] = {}
    for signal, provider, shutdown in _providers():
        # The SDK's own atexit handler would run the same shutdown again, unbounded; this one replaces it.
        handler = getattr(provider, "_atexit_handler", None)
        if handler is not None:
            atexit.unregister(handler)
            provider._atexit_handler = None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            finished[signal] = False
            continue
        worker = threads.start(_quietly, f"otel-reliability-final-{signal}", (shutdown, remaining))
        worker.join(remaining)
        finished[signal] = not worker.is_alive()
    late = [s for s, ok in finished.items() if not ok]
    if late:
        _logger.warning(
            "otel-reliability: final export of %s not finished within %.0f s (exporter endpoint unreachable?); "
            "exiting without it",
            ", ".join(late),
            timeout,
        )
    return finished


def _quietly(shutdown: Callable[[float], Any], seconds: float) -> None:
    try:
        shutdown(seconds)
    except Exception as exc:  # a failing exporter must not turn an orderly exit into a traceback
        _logger.warning("otel-reliability: final export failed: %s", exc)


def _exiting_on_signal(server: Any) -> bool:
    """Whether this uvicorn server stops because the process was told to (SIGTERM, SIGINT).

    A server stopped from code (``should_exit`` set by a test or an embedding app, maybe in a side thread) must
    not shut the process's telemetry down: the process goes on, and ``atexit`` exports at its real end."""
    told = upstream_servers.signalled(server)
    if told is not None:
        return told
    return threading.current_thread() is threading.main_thread()  # another uvicorn: signals reach the main thread


def _after_server_shutdown(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    async def run() -> Any:
        try:
            return await wrapped(*args, **kwargs)
        finally:
            if _exiting_on_signal(instance):
                final_export()  # blocks the loop at most FINAL_EXPORT_TIMEOUT s; it serves nothing any more

    return run()


_installed = False


def install() -> None:
    """Arrange the final export (uvicorn's shutdown, and ``atexit``). Call after the providers exist."""
    global _installed
    if _installed:
        return
    _installed = True
    import wrapt

    from otel_reliability.console import show_on_console

    show_on_console(_logger.name)
    atexit.register(final_export)

    def patch(module: Any) -> None:
        if hasattr(getattr(module, "Server", None), "shutdown"):
            wrapt.wrap_function_wrapper(module, "Server.shutdown", _after_server_shutdown)
            if upstream_servers.needs_signal_wrapper():  # _captured_signals moved (otel_reliability.upstream)
                wrapt.wrap_function_wrapper(module, "Server.handle_exit", upstream_servers.note_signal)

    wrapt.register_post_import_hook(patch, "uvicorn.server")
