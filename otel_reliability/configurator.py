"""The configurator: upstream's SDK set-up, plus the Readings reader and a Prometheus endpoint that never
takes the process down.

Differences from ``opentelemetry-sdk``'s own configurator:
- the in-process Readings reader is on the MeterProvider, so health views read the same meters;
- every process gets its own ``service.instance.id`` (a UUID) unless the user set one, so workers of a
  prefork server are told apart (in health JSON and on the collector path); a prefork worker appends its pid
  to the one the user (or the Kubernetes Operator) set for the container;
- the Prometheus endpoint (``OTEL_METRICS_EXPORTER=prometheus``) renders the Readings' collections with the
  exporter's own translation: one reader instead of two, so each measurement is aggregated once and a scrape
  shows what health reads;
- that endpoint is bound here: when the port is taken
  (a sibling worker of a prefork server has it) this process logs one line and keeps its SDK and its
  instrumentation instead of aborting the whole configuration as upstream does;
- in a gunicorn master the SDK is set up in each worker right after the fork, not in the master (which
  serves no requests): each worker gets its own resource, readers and export threads;
- prometheus_client's own process/platform/gc collectors are removed from :9464, so the direct path shows
  the same metric names as the collector path.

Prefork servers (gunicorn, granian, uvicorn's and hypercorn's supervisors: otel_reliability/launchers.py):
the master starts the host aggregator (otel_reliability/host/) and serves :9464 for the whole host; each worker
publishes its readings for it and answers health for the host. A spawning supervisor (``uvicorn --workers``,
``fastapi run --workers``, ``fastapi dev``, hypercorn) is set up as a single process first and becomes the
master when it starts its workers; its :9464 then renders the host. By OTLP each worker still exports its own
metrics under its own ``service.instance.id``. With OTEL_RELIABILITY_PREFORK=false, one worker serves :9464
for itself, as in a single process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk._configuration import _initialize_components, _OTelSDKConfigurator
from opentelemetry.sdk.metrics.export import MetricsData

from otel_reliability import config, console, export_logs, launchers, semconv, shutdown, threads, upstream
from otel_reliability.instrumentation import install_quiet_views
from otel_reliability.readings import Readings, install, retention

_logger = logging.getLogger("otel_reliability")

_INSTANCE_ID = semconv.ATTR_SERVICE_INSTANCE_ID


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _exporter_names(signal: str) -> list[str]:
    raw = os.environ.get(f"OTEL_{signal}_EXPORTER", "")
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return [] if names == ["none"] else names


def _user_instance_id() -> str | None:
    """The ``service.instance.id`` of OTEL_RESOURCE_ATTRIBUTES, if the user (or the Operator) set one."""
    for part in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = part.partition("=")
        if key.strip() == _INSTANCE_ID:
            return value.strip()
    return None


def instance_id(given: str | None, worker: bool) -> str:
    """Each process exports under its own ``service.instance.id``: a UUID unless one is given. A given id names
    the whole container (the Operator sets ``namespace.pod.container``), so a prefork worker appends its pid:
    two workers under one id would send two processes' cumulative counts as one series."""
    if given is None:
        return str(uuid.uuid4())
    return f"{given}.{os.getpid()}" if worker else given


def configure_sdk(*, forked_worker: bool = False, **kwargs: Any) -> Readings:
    """Build the providers (traces, metrics, logs) from the environment and attach the Readings.

    ``forked_worker``: called in a worker right after a forking master (gunicorn, granian) forked it."""
    settings = config.settings()
    metric_names = _exporter_names("METRICS")
    wants_prometheus = "prometheus" in metric_names
    others = [n for n in metric_names if n != "prometheus"]
    resource_attributes = dict(kwargs.pop("resource_attributes", None) or {})
    given = _user_instance_id()
    # A spawned process serves (uvicorn --workers, fastapi run --workers, hypercorn); helpers export nothing.
    worker = forked_worker or (launchers.is_spawned() and not launchers.is_multiprocessing_helper())
    if given is None or worker:  # over OTEL_RESOURCE_ATTRIBUTES' value (these attributes are merged last)
        resource_attributes.setdefault(_INSTANCE_ID, instance_id(given, worker))
    export_logs.install()  # one line per unreachable OTLP endpoint, not one per export and retry
    # Upstream would bind :9464 itself and abort on EADDRINUSE; we build the metric readers ourselves.
    # threads.blocked(): the SDK's export threads leave signals to the app's threads (otel_reliability.threads).
    with _environ("OTEL_METRICS_EXPORTER", ",".join(others) or "none"), threads.blocked():
        _initialize_components(resource_attributes=resource_attributes, **kwargs)
    from otel_reliability import otlp_spans

    otlp_spans.install()  # the OTLP span exporters just imported encode with ours (same bytes, a fifth of the CPU)
    shutdown.install()  # a bounded final export on SIGTERM (uvicorn dies by the signal: no atexit)
    provider = metrics.get_meter_provider()
    upstream.check_all()  # every private access into a package already imported: one WARNING per changed shape
    install_quiet_views(provider)
    reader = Readings(
        snapshot_interval=settings.snapshot_interval,
        retention=retention(settings.error_window),
        cache_seconds=settings.health_cache,
    )
    install(reader.bind(provider))
    from otel_reliability.request_errors import install_spike_detector

    install_spike_detector(reader, settings)  # any HTTP framework's request metrics, FastAPI or not
    from otel_reliability import host

    # A prefork worker publishes to its master, which serves :9464 for the host.
    helper = launchers.is_multiprocessing_helper()
    hosted = not helper and host.start_worker(reader)
    if wants_prometheus and not hosted and not helper:
        _start_prometheus(reader)
    return reader


def _start_host_master(launcher: str) -> None:
    """In a forking master (gunicorn, granian): the shared directory for the workers, and :9464 for the host
    (the one process that does not come and go with workers)."""
    from otel_reliability import host

    if not host.enabled():
        return
    aggregator = host.start_master(config.settings(), launcher)
    if "prometheus" in _exporter_names("METRICS"):
        served = _serve_prometheus(aggregator.export)
        if isinstance(served, _Endpoint) and served.server is not None:
            # A forked worker must not keep the master's listening socket open.
            os.register_at_fork(after_in_child=served.server.socket.close)


def _supervisor_starting(launcher: str) -> None:
    """A spawning supervisor (launchers.watch_supervisors) starts its workers: this process, set up as a
    single process so far, becomes the host's master, and the :9464 it serves renders the host from now on."""
    from otel_reliability import host

    served = _endpoint
    if host.aggregator() is not None:
        return
    if not host.enabled():
        if served is not None:
            served.close()  # one worker serves :9464 for itself, as in one process
        return
    aggregator = host.start_master(config.settings(), launcher)
    if served is not None:
        served.export = aggregator.export


def _start_prometheus(readings: Readings) -> None:
    """Serve the Readings' collections on the Prometheus endpoint, rendered by the Prometheus exporter's own
    translation (the names the collector path shows too). No second MetricReader: each measurement is
    aggregated once, and a scrape refreshes the snapshot health reads."""
    if _serve_prometheus(readings.export) is _NO_TRANSLATION:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        provider = metrics.get_meter_provider()
        provider.add_metric_reader(PrometheusMetricReader())  # type: ignore[attr-defined]


_NO_TRANSLATION: Any = object()


class _Endpoint:
    """The Prometheus endpoint this process serves, and what a scrape renders (this process's Readings, or the
    host's merge once this process became a prefork master)."""

    def __init__(self, server: Any, export: Callable[[], MetricsData | None]) -> None:
        self.server = server
        self.export = export

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


_endpoint: _Endpoint | None = None


def _serve_prometheus(export: Callable[[], MetricsData | None]) -> Any:
    """Bind the Prometheus endpoint and render ``export()`` on each scrape with the exporter's translation.

    Returns the ``_Endpoint``, None when the port is taken, or ``_NO_TRANSLATION`` when the exporter's
    translation class moved (the caller falls back to the exporter's own reader where it has an SDK).
    """
    global _endpoint
    from prometheus_client import REGISTRY, gc_collector, platform_collector, process_collector, start_http_server

    host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost")
    port = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464"))
    for default_collector in (
        process_collector.PROCESS_COLLECTOR,
        platform_collector.PLATFORM_COLLECTOR,
        gc_collector.GC_COLLECTOR,
    ):
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(default_collector)
    try:
        with threads.blocked():  # its serving thread leaves signals to the app's threads (otel_reliability.threads)
            served = start_http_server(port=port, addr=host)
    except OSError as exc:
        from otel_reliability import host as host_readings

        # A spawned process without a master (not a worker of a launcher in otel_reliability/launchers.py)
        worker = launchers.is_spawned() and host_readings.enabled()
        _logger.warning(
            "otel-reliability: metrics endpoint %s:%s not started (%s); %s This process keeps its SDK; export "
            "its metrics by OTLP to a collector (OTEL_EXPORTER_OTLP_ENDPOINT) to see every worker.",
            host,
            port,
            exc.strerror or exc,
            "this process is a worker of a server otel-reliability does not know as a prefork server (README: "
            "Prefork servers): health and metrics answer for this worker only."
            if worker
            else "another process serves it.",
        )
        return None
    if not upstream.usable("prometheus.collector"):  # the translation moved: the exporter's own reader instead
        return _NO_TRANSLATION
    endpoint = _Endpoint(served[0] if isinstance(served, tuple) else None, export)

    def feed(collector: Any) -> None:
        data = endpoint.export()
        if data is not None:
            collector.add_metrics_data(data)

    collector = upstream.exporters.prometheus_collector(feed)
    REGISTRY.register(collector)
    _endpoint = endpoint
    return endpoint


class ReliabilityConfigurator(_OTelSDKConfigurator):
    """Entry point ``opentelemetry_configurator: otel_reliability``."""

    def _configure(self, **kwargs: Any) -> None:
        forking = launchers.forking_master()
        if forking is not None:
            # The master forks workers; set up the SDK in each of them, after the fork (and only in the
            # master's direct children: a worker's own forks inherit the worker's SDK). A worker spawned
            # instead (granian on Python 3.14) sets itself up like any process under opentelemetry-instrument.
            master = os.getpid()

            def in_worker() -> None:
                if os.getppid() == master:
                    configure_sdk(forked_worker=True, **dict(kwargs))

            _start_host_master(forking)
            os.register_at_fork(after_in_child=in_worker)
            _logger.info("otel-reliability: %s master detected; the SDK is set up in each worker", forking)
            return
        configure_sdk(**kwargs)
        if not launchers.is_multiprocessing_helper():
            launchers.watch_supervisors(_supervisor_starting)


_configured = False


def configure(app: Any = None) -> None:
    """Everything ``opentelemetry-instrument`` gives, in one call, for an app started without it.

    Applies the distro's defaults, builds the providers with the Readings, loads every instrumentor entry
    point (honouring OTEL_PYTHON_DISABLED_INSTRUMENTATIONS) and, given a FastAPI app that already exists,
    instruments it and mounts the health routes. Idempotent; under ``opentelemetry-instrument`` only the app
    part runs. A bad OTEL_RELIABILITY_* value raises ``ConfigError``.
    """
    global _configured
    from otel_reliability import readings
    from otel_reliability.distro import ReliabilityDistro, environment_defaults, validate_otel_environment

    if not _configured:
        _configured = True
        if not readings.installed() and not hasattr(metrics.get_meter_provider(), "add_metric_reader"):
            console.install()
            settings = config.load()
            validate_otel_environment(os.environ)
            config.set_settings(settings)
            environment_defaults(os.environ, settings)
            config.log_effective(settings)
            from otel_reliability.instrumentation.http_server import our_distro_configured

            our_distro_configured()  # decide on the environment with our defaults in it
            configure_sdk()
            from opentelemetry.instrumentation.auto_instrumentation._load import _load_instrumentors

            _load_instrumentors(ReliabilityDistro())
    if app is not None:
        _instrument_app(app)


def _instrument_app(app: Any) -> None:
    from otel_reliability.health.fastapi import mount
    from otel_reliability.instrumentation.http_server import instrument_app

    instrument_app(app)  # the one HTTP layer chosen for this process (lean, contrib or FastAPI's native)
    mount(app)
