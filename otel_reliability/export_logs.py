"""Quiet, honest logs for OTLP exporters: one line when an endpoint goes away, one a minute while it stays
away, one when it is back.

Why: upstream's OTLP exporters log every failed export, and every retry inside it ("Transient error ...
retrying in 1.03s", "Failed to export ... max retries"), some with a traceback: 14 lines in 12 s with a
collector down and a 1 s export interval, none saying whether anything is lost. An operator needs three
facts: which endpoint, since when, and what happens to the telemetry meanwhile.

How: every OTLP exporter class (HTTP and gRPC; metrics, traces, logs) has its ``export`` wrapped, when its
module is imported, so that the outcome of each export is known (upstream says nothing on success, so logs
alone could never tell "back"). While an export runs, a ``logging.Filter`` on the upstream exporter loggers
folds their WARNING/ERROR records into this export's state (the last one becomes the short reason given in our
lines) instead of printing them; records outside an export (configuration warnings) pass untouched. An
exporter that raises is turned into a failed export, so no traceback reaches the log.

What is kept while an endpoint is down, as the WARNING says:
- metrics (cumulative temporality, the default): totals stay in this process and the first export that gets
  through carries them whole: no count is lost. Under delta temporality the failed exports' counts are lost.
- traces and logs: the batch processor keeps up to OTEL_BSP_MAX_QUEUE_SIZE / OTEL_BLRP_MAX_QUEUE_SIZE (2048)
  waiting; a batch whose export failed is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otel_reliability.console import mask_url, show_on_console

__all__ = ["REMINDER_INTERVAL", "ExportWatch", "install"]

_logger = logging.getLogger("otel_reliability.export")

REMINDER_INTERVAL = 60.0
"""Seconds between two reminders while an endpoint stays unreachable."""

# (module, class, signal) of every upstream OTLP exporter.
_EXPORTERS = [
    ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter", "metrics"),
    ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter", "traces"),
    ("opentelemetry.exporter.otlp.proto.http._log_exporter", "OTLPLogExporter", "logs"),
    ("opentelemetry.exporter.otlp.proto.grpc.metric_exporter", "OTLPMetricExporter", "metrics"),
    ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "OTLPSpanExporter", "traces"),
    ("opentelemetry.exporter.otlp.proto.grpc._log_exporter", "OTLPLogExporter", "logs"),
]
# The loggers upstream's export path writes to (the HTTP client logs through its exporter's module logger).
_UPSTREAM_LOGGERS = [
    *sorted({module for module, _, _ in _EXPORTERS}),
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
]

_mask = mask_url  # an endpoint as it may be logged: never the user:password of a URL


def _gist(text: str) -> str | None:
    for pattern, template in (
        (r"\[Errno -?\d+\] ([^'\")\]]+)", "{}"),
        (r"StatusCode\.([A-Z_]+)", "{}"),
        (r"code: (\d{3})", "HTTP {}"),
        (r"(Read timed out|timed out|Connection reset by peer|Connection refused)", "{}"),
    ):
        match = re.search(pattern, text)
        if match:
            return template.format(match.group(1).strip())
    return None


def short_reason(text: str) -> str:
    """The gist of an upstream error line: 'Connection refused', 'UNAVAILABLE', 'HTTP 503', else its start."""
    gist = _gist(text)
    if gist is not None:
        return gist
    return _mask(text.strip().splitlines()[0][:120]) if text.strip() else "export failed"


def _exports(n: int) -> str:
    return f"{n} export" if n == 1 else f"{n} exports"


@dataclass
class ExportWatch:
    """The state of one (signal, endpoint): reachable or not, since when, and the log lines it is owed.

    ``clock`` is injectable so the once-a-minute rule is testable without waiting a minute.
    """

    signal: str
    endpoint: str
    kept: str
    clock: Callable[[], float] = time.monotonic
    down_since: float | None = None
    last_line: float = 0.0
    failed: int = 0
    reason: str = ""
    specific: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fold(self, message: str) -> None:
        """An upstream log line emitted during an export: keep its gist for our own line, print nothing.

        The first specific cause wins ("Connection refused" over a later "max retries or shutdown")."""
        gist = _gist(message)
        if gist is not None and not self.specific:
            self.reason, self.specific = gist, True
        elif not self.reason:
            self.reason = short_reason(message)

    def outcome(self, ok: bool) -> None:
        now = self.clock()
        with self.lock:
            if ok:
                if self.down_since is not None:
                    _logger.info(
                        "otel-reliability: OTLP %s export to %s is back after %.0f s (%s failed meanwhile)",
                        self.signal, self.endpoint, now - self.down_since, _exports(self.failed),
                    )  # fmt: skip
                self.down_since, self.failed, self.reason, self.specific = None, 0, "", False
                return
            self.failed += 1
            if self.down_since is None:
                self.down_since = self.last_line = now
                _logger.warning(
                    "otel-reliability: OTLP %s export to %s failing (%s); %s. A reminder once a minute while it "
                    "lasts, one line when it is back.",
                    self.signal, self.endpoint, self.reason or "export failed", self.kept,
                )  # fmt: skip
            elif now - self.last_line >= REMINDER_INTERVAL:
                self.last_line = now
                _logger.warning(
                    "otel-reliability: OTLP %s export to %s still failing after %.0f s (%s failed; %s); %s.",
                    self.signal, self.endpoint, now - self.down_since, _exports(self.failed),
                    self.reason or "export failed", self.kept,
                )  # fmt: skip
            self.reason, self.specific = "", False


_watches: dict[tuple[str, str], ExportWatch] = {}
_watches_lock = threading.Lock()
_current = threading.local()


def _kept(signal: str, exporter: Any) -> str:
    if signal == "metrics":
        from opentelemetry.sdk.metrics import Counter
        from opentelemetry.sdk.metrics.export import AggregationTemporality

        temporality = getattr(exporter, "_preferred_temporality", {}).get(Counter)
        if temporality == AggregationTemporality.DELTA:
            return "delta temporality: the counts of failed exports are lost"
        return "metric totals are kept in this process and sent whole once it is back (no count is lost)"
    variable = "OTEL_BSP_MAX_QUEUE_SIZE" if signal == "traces" else "OTEL_BLRP_MAX_QUEUE_SIZE"
    queue = os.environ.get(variable, "2048")
    what = "spans" if signal == "traces" else "log records"
    return f"up to {queue} {what} wait in the queue ({variable}); those of failed exports are dropped"


def watch_for(signal: str, exporter: Any) -> ExportWatch:
    endpoint = _mask(str(getattr(exporter, "_endpoint", None) or "the OTLP endpoint"))
    key = (signal, endpoint)
    with _watches_lock:
        watch = _watches.get(key)
        if watch is None:
            watch = _watches[key] = ExportWatch(signal, endpoint, _kept(signal, exporter))
        return watch


def _failure(signal: str) -> Any:
    if signal == "metrics":
        from opentelemetry.sdk.metrics.export import MetricExportResult

        return MetricExportResult.FAILURE
    if signal == "traces":
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.FAILURE
    from opentelemetry.sdk._logs.export import LogRecordExportResult

    return LogRecordExportResult.FAILURE


def _export_wrapper(signal: str) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if getattr(_current, "watch", None) is not None:  # a nested export (batch splitting): outer one reports
            return wrapped(*args, **kwargs)
        watch = watch_for(signal, instance)
        _current.watch = watch
        try:
            result = wrapped(*args, **kwargs)
        except Exception as exc:  # a broken exporter: a failed export, not a traceback in the log
            watch.fold(f"{type(exc).__name__}: {exc}")
            result = _failure(signal)
        finally:
            _current.watch = None
        if getattr(instance, "_shutdown", False) is True:
            return result  # exports after shutdown ("already shutdown") say nothing about the endpoint
        watch.outcome(getattr(result, "name", None) == "SUCCESS")
        return result

    return wrapper


def _http_client_wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """The HTTP exporters' client knows the cause (refused, 503) that its final log line leaves out."""
    result = wrapped(*args, **kwargs)
    watch: ExportWatch | None = getattr(_current, "watch", None)
    if watch is not None and not getattr(result, "success", True):
        code = getattr(result, "status_code", None)
        watch.fold(f"code: {code}" if code else str(getattr(result, "error", None) or getattr(result, "reason", "")))
    return result


class _FoldFilter(logging.Filter):
    """Drops upstream exporter records emitted during a watched export, keeping their gist in its state."""

    def filter(self, record: logging.LogRecord) -> bool:
        watch: ExportWatch | None = getattr(_current, "watch", None)
        if watch is None or record.levelno < logging.WARNING:
            return True
        with contextlib.suppress(Exception):  # a malformed record must not break the export thread
            watch.fold(record.getMessage())
        return False


_FILTER = _FoldFilter()
_installed = False


def install() -> None:
    """Wrap the OTLP exporters (now or when their module is imported) and fold their log lines. Idempotent."""
    global _installed
    if _installed:
        return
    _installed = True
    import wrapt

    show_on_console(_logger.name)
    for name in _UPSTREAM_LOGGERS:
        logging.getLogger(name).addFilter(_FILTER)
    for module, cls, signal in _EXPORTERS:

        def patch(mod: Any, cls: str = cls, signal: str = signal) -> None:
            if hasattr(mod, cls):
                wrapt.wrap_function_wrapper(mod, f"{cls}.export", _export_wrapper(signal))

        wrapt.register_post_import_hook(patch, module)

    def patch_client(mod: Any) -> None:
        if hasattr(getattr(mod, "_OTLPHTTPClient", None), "export"):  # private upstream class: only if present
            wrapt.wrap_function_wrapper(mod, "_OTLPHTTPClient.export", _http_client_wrapper)

    wrapt.register_post_import_hook(patch_client, "opentelemetry.exporter.otlp.common.http")
