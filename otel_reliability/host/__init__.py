"""One host, one truth: under a prefork server (gunicorn, ``uvicorn --workers``) health and :9464 answer for
every worker, whichever worker or process answers.

The design, as a small protocol between one master (the gunicorn arbiter, the uvicorn supervisor) and its
workers, through a private directory (``OTEL_RELIABILITY_HOST_DIR``, created by the master, 0700):

- **Two file formats.** What processes publish (a worker's cumulative readings, the master's combination, the
  retired workers' sums, the window history, host.marshal) is ``marshal`` of plain values, each file replaced
  whole by a rename (``store``). The crash-safe table is the other one: the HTTP layer's request histogram,
  updated in place in shared memory per request, so a SIGKILLed worker loses none of its requests
  (``otel_reliability.crash_safe``).
- **One timing setting.** A worker publishes every ``PUBLISH_INTERVAL`` (0.5 s); the master combines every
  ``COMBINE_INTERVAL`` (half of it); a worker re-reads the combination when it is older than
  ``OTHERS_TTL`` (in the background) or ``OTHERS_MAX_AGE`` (on the call), so a health answer is at most
  ~1.45 s behind another worker and at once up to date for its own. Every interval is derived in ``timing``.
- **Two threads per process at most, each periodic.** A worker's publisher thread publishes and, woken by an
  event when a health call finds its copy of the other workers old, re-reads them; the master's thread folds
  dead workers, combines and writes the history. The Readings' own thread (readings/) collects as in any
  process.
- **Adding up** (``merge``): counters summed over every worker that ever ran, dead ones included (counts never
  go backwards); gauges of live workers only (summed, or max/min for settings and ages).

The modules: ``master`` (the directory's owner; serves :9464 for the host), ``worker`` (``Publisher``, and
``HostReadings``: health's Readings interface answered for the host), ``merge``, ``store`` (the files),
``timing``. A single-process server never reaches any of this: ``health_readings()`` returns the process's own
Readings.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from otel_reliability import config, crash_safe
from otel_reliability.readings import Readings, process_readings

if TYPE_CHECKING:
    from otel_reliability.host.master import HostAggregator
    from otel_reliability.host.worker import HostReadings, Publisher

_logger = logging.getLogger("otel_reliability")

_aggregator: HostAggregator | None = None
_host: HostReadings | None = None
_publisher: Publisher | None = None
_host_pid = 0


def enabled() -> bool:
    """``OTEL_RELIABILITY_PREFORK`` as the environment says now (a forked worker may hold older settings)."""
    return config.current(config.PREFORK)


def start_master(settings: config.Settings, launcher: str) -> HostAggregator:
    """In the master or supervisor, before any worker starts: the shared directory and its aggregator."""
    global _aggregator
    from otel_reliability.host.master import HostAggregator
    from otel_reliability.readings import retention as readings_retention

    retention = readings_retention(settings.error_window)
    aggregator = HostAggregator(history_interval=settings.snapshot_interval, retention=retention)
    config.hand_down(config.HOST_DIR, str(aggregator.path))
    aggregator.start()
    _aggregator = aggregator
    _logger.info("otel-reliability: %s master; health and :9464 answer for every worker", launcher)
    return aggregator


def start_worker(reader: Readings) -> bool:
    """In a worker of a master that called ``start_master``: publish, and answer health for the host.

    False (nothing started) in any other process, including a process a worker starts itself: it inherits
    the variable but is not a child of the master.
    """
    global _host, _host_pid, _publisher
    path = config.current(config.HOST_DIR)
    if path is None or not enabled():
        return False
    from otel_reliability.host import store
    from otel_reliability.host.worker import HostReadings, Publisher, wait_for_directory

    directory = wait_for_directory(path)
    if directory is None or directory.host().get("master") != os.getppid():
        return False
    publisher = Publisher(directory, reader)
    try:
        publisher.publish()  # seen by the other workers at once, before the first request
    except OSError:
        _logger.warning("otel-reliability: cannot publish to %s; health answers for this worker only", path)
        return False
    crash_safe.open_in(directory.path, store.stem(publisher.file))  # the HTTP layer's crash-safe request counts
    _host = HostReadings(directory, reader, publisher.file, publisher.versions, refresh=publisher.wake)
    _publisher = publisher
    publisher.after = _host.warm
    publisher.when_woken = _host.refresh_others
    publisher.start_thread()
    _host_pid = os.getpid()
    return True


def publish_at_shutdown(app: Any) -> None:
    """Publish once more when ``app``'s lifespan ends, in a prefork worker.

    atexit is not enough: uvicorn (and so gunicorn's UvicornWorker) re-raises SIGTERM after a graceful
    shutdown, and a process killed by a signal runs no atexit hook. A worker retired by TTOU, or stopped with
    the server, would take the requests it counted since its last publication (up to 0.5 s) with it. The app's
    lifespan shutdown runs before that, on every ASGI server, whatever lifespan the app declares.
    """
    publisher = _publisher
    router: Any = getattr(app, "router", None)
    if publisher is None or _host_pid != os.getpid() or not hasattr(router, "lifespan_context"):
        return
    original = router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        try:
            async with original(app) as state:
                yield state
        finally:
            publisher.final()

    router.lifespan_context = lifespan


def health_readings() -> Readings | HostReadings:
    """What health views read: the host's readings in a prefork worker, else this process's Readings."""
    host = _host
    if host is not None and _host_pid == os.getpid():
        return host
    return process_readings()


def aggregator() -> HostAggregator | None:
    return _aggregator
