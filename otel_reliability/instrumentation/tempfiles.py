"""Temporary files that are removed on success and on error, and counted while they exist.

Usage::

    from otel_reliability import temp_file

    with temp_file(".mp3") as path:      # a pathlib.Path of an empty file, closed, yours to open
        process_audio(path)
    # removed here, also when process_audio raised

Metrics (created by the ``reliability_tempfiles`` instrumentor below; ``opentelemetry-instrument`` loads it,
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=reliability_tempfiles`` switches it off: files are removed either way,
only not counted):

- ``temp_file.open`` ({file}): temp files that exist now;
- ``temp_file.size`` (By): the bytes they hold now (``stat`` of each at collection time, never on the
  request path);
- ``temp_file.leaked`` ({file}, counter): files whose removal failed. Each is logged once, at WARNING, with
  its path, so an operator can delete it; nothing retries.

A removal error is never swallowed: a disk filling up with orphaned files must show. A file that is already
gone at exit (the caller moved it) is not a leak. The instrumentor has its own entry point, so that disabling
``reliability_operations`` leaves the temp-file metrics alone.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import tempfile
import threading
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from opentelemetry import metrics
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_reliability import semconv
from otel_reliability.instrumentation._instrumented import Instrumented
from otel_reliability.version import __version__

_logger = logging.getLogger(__name__)

_open: dict[int, Path] = {}
_ids = itertools.count(1)
_lock = threading.Lock()


@contextlib.contextmanager
def temp_file(suffix: str = ".tmp", *, dir: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Create an empty temporary file and yield its path; remove it when the block ends, however it ends."""
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="otel-rel-", dir=dir)
    os.close(fd)  # the caller opens the path as it needs; an open descriptor would only leak with the file
    path = Path(name)
    token = next(_ids)
    with _lock:
        _open[token] = path
    try:
        yield path
    finally:
        with _lock:
            _open.pop(token, None)
        _remove(path)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # already gone (moved or deleted by the caller): nothing leaked
    except OSError as exc:
        counter = _instrumented.state
        if counter is not None:
            counter.add(1)
        _logger.warning(
            "otel-reliability: temporary file %s could not be removed and is left on disk (%s: %s)",
            path,
            type(exc).__name__,
            exc.strerror or exc,
        )


def open_files() -> list[Path]:
    """The temp files that exist now (a copy)."""
    with _lock:
        return list(_open.values())


def _observe_open(leaked: Any, options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(len(open_files()))]


def _observe_size(leaked: Any, options: CallbackOptions) -> Iterable[Observation]:
    total = 0
    for path in open_files():
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return [Observation(total)]


_instrumented: Instrumented[Any] = Instrumented()
"""While instrumented (``TempFilesInstrumentor``): the ``temp_file.leaked`` counter."""


def bind_meter(meter: Meter | None) -> None:
    """Create the temp-file instruments on ``meter`` (``TempFilesInstrumentor`` calls this); None unbinds."""
    if meter is None:
        _instrumented.stop()
        return
    _instrumented.start(
        meter.create_counter(
            semconv.METRIC_TEMP_FILE_LEAKED,
            unit="{file}",
            description="Temporary files whose removal failed (left on disk).",
        ),
        meter,
    )
    meter.create_observable_gauge(
        semconv.METRIC_TEMP_FILE_OPEN,
        callbacks=[_instrumented.gate(meter, _observe_open)],
        unit="{file}",
        description="Temporary files that exist now.",
    )
    meter.create_observable_gauge(
        semconv.METRIC_TEMP_FILE_SIZE,
        callbacks=[_instrumented.gate(meter, _observe_size)],
        unit=semconv.UNIT_BYTES,
        description="Bytes held by the temporary files that exist now.",
    )


_instruments: tuple[str, ...] = ()
"""Empty: ``temp_file`` is this package's own API, no library is patched."""

SCOPE = "otel_reliability.operations"
"""The instrumentation scope of the temp-file series (the ``otel_scope_name`` label on :9464): the operations
instrumentor's, whose series they sit beside; another scope would change every temp-file series' labels."""


class TempFilesInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Entry point ``reliability_tempfiles``. Accepts ``meter_provider=``."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        bind_meter(metrics.get_meter(SCOPE, __version__, kwargs.get("meter_provider"), semconv.SCHEMA_URL))

    def _uninstrument(self, **kwargs: Any) -> None:
        bind_meter(None)
