"""Temporary files that are removed on success and on error, and counted while they exist.

Usage::

    from otel_reliability import temp_file

    with temp_file(".mp3") as path:      # a pathlib.Path of an empty file, closed, yours to open
        process_audio(path)
    # removed here, also when process_audio raised

Metrics (created by the ``reliability_tempfiles`` instrumentor, otel_reliability/instrumentation/tempfiles.py):

- ``temp_file.open`` ({file}): temp files that exist now;
- ``temp_file.size`` (By): the bytes they hold now (``stat`` of each at collection time, never on the
  request path);
- ``temp_file.leaked`` ({file}, counter): files whose removal failed. Each is logged once, at WARNING, with
  its path, so an operator can delete it; nothing retries.

The seed's version swallowed every removal error (``except Exception: pass``), so a disk filling up with
orphaned files stayed invisible. A file that is already gone at exit (the caller moved it) is not a leak.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_reliability import semconv
from otel_reliability.instrumentation._instrumented import Instrumented

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
            "temp_file.leaked", unit="{file}", description="Temporary files whose removal failed (left on disk)."
        ),
        meter,
    )
    meter.create_observable_gauge(
        "temp_file.open",
        callbacks=[_instrumented.gate(meter, _observe_open)],
        unit="{file}",
        description="Temporary files that exist now.",
    )
    meter.create_observable_gauge(
        "temp_file.size",
        callbacks=[_instrumented.gate(meter, _observe_size)],
        unit=semconv.UNIT_BYTES,
        description="Bytes held by the temporary files that exist now.",
    )
