"""Every metric name, attribute key and unit that the package emits or reads back, defined once.

Why one module: the instrumentors write these names, the health views and the host merge read them back from
the Readings, the CLI and the dashboards query their Prometheus forms. When two modules spell a name apart, a
rename in one silently empties the other (a view shows nothing, a dashboard panel goes blank). With one
spelling, a rename is one edit, and ``tests/test_architecture.py`` checks that the PromQL in the dashboard
generator, the alert rules and the fleet CLI names only these names in Prometheus form.

Naming: ``METRIC_*`` is an instrument name, ``ATTR_*`` an attribute key, ``UNIT_*`` a UCUM unit. Several OTel
names serve as both a metric and an attribute (``circuit_breaker.state``); they get one constant of each kind,
so code says which one it means.

Where the names come from: a name the OpenTelemetry semantic conventions define is re-exported from
``opentelemetry-semantic-conventions`` (``opentelemetry.semconv.attributes``/``.metrics`` for stable names,
``opentelemetry.semconv._incubating`` for development ones such as ``db.client.connection.*``), as the contrib
instrumentations take theirs; only this project's own names (circuit breakers, operations, temporary files, the
pool's extra counters, transactions; shared/CONTRACT.md) are spelled here. ``tests/test_semconv.py`` checks
each re-exported name against its expected text, so a package release that renamed one cannot rename ours
unnoticed. This module imports only that package, so every floor of the package may import it.
"""

from __future__ import annotations

# The development names live in a private-named module of the package (named in otel_reliability.upstream).
from opentelemetry.semconv._incubating.metrics import db_metrics as _db_development
from opentelemetry.semconv._incubating.metrics import process_metrics as _process_development
from opentelemetry.semconv.attributes import (
    client_attributes,
    db_attributes,
    error_attributes,
    exception_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    service_attributes,
    url_attributes,
)
from opentelemetry.semconv.metrics import db_metrics, http_metrics

SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
"""The semantic-conventions version our names follow, on every meter and tracer of the package: a backend that
knows schemas can translate our names when the conventions rename one."""

# --- shared attribute keys -------------------------------------------------------------------------------------
ATTR_ERROR_TYPE = error_attributes.ERROR_TYPE
"""Why a call, request or operation failed: the exception's class name (``error_type``), an HTTP status or a
SQLSTATE (OTel semconv)."""


def error_type(error: BaseException, *, qualified: bool = True) -> str:
    """The class name ``error.type`` (and an exception event's ``exception.type``) gives for ``error``: the only
    place it is computed.

    ``qualified`` (HTTP requests, statements, span exception events): the fully qualified name, as the
    conventions ask and the SDK's exception events give (``sqlalchemy.exc.OperationalError``; a builtin bare,
    ``TimeoutError``). Unqualified (the pool's connection errors, tracked operations, breaker rejections,
    transaction retries): the bare ``__qualname__``, which those series have carried since they were first
    published; it is a label value on the dashboards and in users' alerts, so it stays."""
    cls = type(error)
    module = cls.__module__
    if not qualified or not module or module == "builtins":
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


HTTP_SERVER_DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1,
    2.5,
    5,
    7.5,
    10,
)
"""The stable HTTP conventions' advisory buckets of ``http.server.request.duration`` (s), as the contrib
instrumentation gives them: whole numbers as ints, since the Prometheus ``le`` label is their text ("1", not
"1.0": another series). A latency objective's threshold is one of them (its SLI is a bucket)."""

# --- circuit breakers ------------------------------------------------------------------------------------------
METRIC_CIRCUIT_BREAKER_STATE = "circuit_breaker.state"
"""1 for the state a breaker is in, 0 for the others (labelled by ``ATTR_CIRCUIT_BREAKER_STATE``)."""
METRIC_CIRCUIT_BREAKER_CALLS = "circuit_breaker.calls"
METRIC_CIRCUIT_BREAKER_TRANSITIONS = "circuit_breaker.transitions"
METRIC_CIRCUIT_BREAKER_CONSECUTIVE_FAILURES = "circuit_breaker.consecutive_failures"
METRIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD = "circuit_breaker.failure_threshold"
METRIC_CIRCUIT_BREAKER_RESET_TIMEOUT = "circuit_breaker.reset_timeout"

ATTR_CIRCUIT_BREAKER_NAME = "circuit_breaker.name"
ATTR_CIRCUIT_BREAKER_STATE = "circuit_breaker.state"
"""The state a series is about (closed, open, half_open); the same string as the metric, a different role."""
ATTR_CIRCUIT_BREAKER_OUTCOME = "circuit_breaker.outcome"
ATTR_CIRCUIT_BREAKER_PREVIOUS_STATE = "circuit_breaker.previous_state"

EVENT_CIRCUIT_BREAKER_STATE_CHANGE = "circuit_breaker.state_change"
"""A span event: a breaker changed state during the current span."""
EVENT_CIRCUIT_BREAKER_REJECTED = "circuit_breaker.rejected"
"""A span event: a call was refused by an open breaker."""

CIRCUIT_BREAKER_STATES = ("closed", "open", "half_open")
"""The values of ``ATTR_CIRCUIT_BREAKER_STATE``."""
CIRCUIT_BREAKER_OUTCOMES = ("success", "failure", "rejected")
"""The values of ``ATTR_CIRCUIT_BREAKER_OUTCOME``."""

# --- database connection pools (OTel semconv db.client.connection.*) -------------------------------------------
METRIC_DB_CLIENT_CONNECTION_COUNT = _db_development.DB_CLIENT_CONNECTION_COUNT
METRIC_DB_CLIENT_CONNECTION_MAX = _db_development.DB_CLIENT_CONNECTION_MAX
METRIC_DB_CLIENT_CONNECTION_IDLE_MAX = _db_development.DB_CLIENT_CONNECTION_IDLE_MAX
METRIC_DB_CLIENT_CONNECTION_PENDING_REQUESTS = _db_development.DB_CLIENT_CONNECTION_PENDING_REQUESTS
METRIC_DB_CLIENT_CONNECTION_TIMEOUTS = _db_development.DB_CLIENT_CONNECTION_TIMEOUTS
METRIC_DB_CLIENT_CONNECTION_WAIT_TIME = _db_development.DB_CLIENT_CONNECTION_WAIT_TIME
"""Histogram of checkout waits; its count is also the number of successful checkouts."""
METRIC_DB_CLIENT_CONNECTION_USE_TIME = _db_development.DB_CLIENT_CONNECTION_USE_TIME
METRIC_DB_CLIENT_CONNECTION_CREATE_TIME = _db_development.DB_CLIENT_CONNECTION_CREATE_TIME
METRIC_DB_CLIENT_CONNECTION_WAIT_TIMEOUT = "db.client.connection.wait_timeout"
METRIC_DB_CLIENT_CONNECTION_ERRORS = "db.client.connection.errors"
METRIC_DB_CLIENT_CONNECTION_INVALIDATIONS = "db.client.connection.invalidations"
METRIC_DB_CLIENT_STATEMENT_TIMEOUT = "db.client.statement_timeout"
METRIC_DB_CLIENT_TRANSACTION_RETRIES = "db.client.transaction.retries"
METRIC_DB_CLIENT_OPERATION_DURATION = db_metrics.DB_CLIENT_OPERATION_DURATION

# Development attribute keys, spelled here rather than imported: their module
# (opentelemetry.semconv._incubating.attributes.db_attributes) costs ~6 ms of every start-up for these two strings.
# tests/test_semconv.py checks them against it.
ATTR_DB_CLIENT_CONNECTION_POOL_NAME = "db.client.connection.pool.name"
ATTR_DB_CLIENT_CONNECTION_STATE = "db.client.connection.state"
"""``idle`` or ``used`` on ``METRIC_DB_CLIENT_CONNECTION_COUNT``."""

# --- database statements and transactions ----------------------------------------------------------------------
ATTR_DB_SYSTEM_NAME = db_attributes.DB_SYSTEM_NAME
ATTR_DB_NAMESPACE = db_attributes.DB_NAMESPACE
ATTR_DB_OPERATION_NAME = db_attributes.DB_OPERATION_NAME
ATTR_DB_COLLECTION_NAME = db_attributes.DB_COLLECTION_NAME
ATTR_DB_QUERY_TEXT = db_attributes.DB_QUERY_TEXT
ATTR_DB_OPERATION_BATCH_SIZE = db_attributes.DB_OPERATION_BATCH_SIZE
ATTR_DB_RESPONSE_STATUS_CODE = db_attributes.DB_RESPONSE_STATUS_CODE
ATTR_SERVER_ADDRESS = server_attributes.SERVER_ADDRESS
ATTR_SERVER_PORT = server_attributes.SERVER_PORT
EVENT_DB_CLIENT_CONNECTION_WAIT = "db.client.connection.wait"
"""A checkout that failed: an event on the current span, since no statement span follows (ours)."""

SPAN_DB_TRANSACTION = "db.transaction"
"""The span of one ``run_in_transaction`` call (ours, as are its attributes and event below)."""
ATTR_DB_TRANSACTION_MAX_ATTEMPTS = "db.transaction.max_attempts"
ATTR_DB_TRANSACTION_TIMEOUT = "db.transaction.timeout"
ATTR_DB_TRANSACTION_ATTEMPTS = "db.transaction.attempts"
ATTR_DB_TRANSACTION_RETRIES = "db.transaction.retries"
ATTR_DB_TRANSACTION_EXHAUSTED = "db.transaction.exhausted"
EVENT_DB_TRANSACTION_RETRY = "db.transaction.retry"
ATTR_DB_TRANSACTION_ATTEMPT = "db.transaction.attempt"
ATTR_DB_TRANSACTION_RETRY_DELAY = "db.transaction.retry_delay"

# --- exceptions and resources (OTel semconv) -------------------------------------------------------------------
ATTR_EXCEPTION_TYPE = exception_attributes.EXCEPTION_TYPE
ATTR_EXCEPTION_MESSAGE = exception_attributes.EXCEPTION_MESSAGE
ATTR_EXCEPTION_STACKTRACE = exception_attributes.EXCEPTION_STACKTRACE
ATTR_EXCEPTION_ESCAPED = exception_attributes.EXCEPTION_ESCAPED
ATTR_SERVICE_NAME = service_attributes.SERVICE_NAME
ATTR_SERVICE_INSTANCE_ID = service_attributes.SERVICE_INSTANCE_ID

# --- HTTP server (OTel semconv) --------------------------------------------------------------------------------
METRIC_HTTP_SERVER_REQUEST_DURATION = http_metrics.HTTP_SERVER_REQUEST_DURATION
ATTR_HTTP_ROUTE = http_attributes.HTTP_ROUTE
ATTR_HTTP_REQUEST_METHOD = http_attributes.HTTP_REQUEST_METHOD
ATTR_HTTP_RESPONSE_STATUS_CODE = http_attributes.HTTP_RESPONSE_STATUS_CODE
ATTR_URL_PATH = url_attributes.URL_PATH
ATTR_URL_QUERY = url_attributes.URL_QUERY
ATTR_URL_SCHEME = url_attributes.URL_SCHEME
ATTR_NETWORK_PROTOCOL_VERSION = network_attributes.NETWORK_PROTOCOL_VERSION
ATTR_CLIENT_ADDRESS = client_attributes.CLIENT_ADDRESS
ATTR_CLIENT_PORT = client_attributes.CLIENT_PORT

# --- process ---------------------------------------------------------------------------------------------------
METRIC_PROCESS_CPU_UTILIZATION = _process_development.PROCESS_CPU_UTILIZATION
METRIC_PROCESS_MEMORY_USAGE = _process_development.PROCESS_MEMORY_USAGE
METRIC_PROCESS_MEMORY_LIMIT = "process.memory.limit"
METRIC_PROCESS_UNIX_FILE_DESCRIPTOR_COUNT = _process_development.PROCESS_UNIX_FILE_DESCRIPTOR_COUNT
METRIC_PROCESS_THREAD_COUNT = _process_development.PROCESS_THREAD_COUNT
METRIC_PROCESS_OPEN_FILE_DESCRIPTOR_COUNT = _process_development.PROCESS_OPEN_FILE_DESCRIPTOR_COUNT
"""The deprecated name of ``process.unix.file_descriptor.count``, which upstream's system-metrics instrumentor
still emits: excluded from it, never emitted by us."""

# --- tracked operations ----------------------------------------------------------------------------------------
METRIC_OPERATION_DURATION = "operation.duration"
METRIC_OPERATION_IN_FLIGHT = "operation.in_flight"
METRIC_OPERATION_STUCK = "operation.stuck"
METRIC_OPERATION_OLDEST_AGE = "operation.oldest_age"
ATTR_OPERATION_NAME = "operation.name"
ATTR_OPERATION_KEY = "operation.key"

# --- temporary files (otel_reliability.tempfiles) --------------------------------------------------------------
METRIC_TEMP_FILE_LEAKED = "temp_file.leaked"
METRIC_TEMP_FILE_OPEN = "temp_file.open"
METRIC_TEMP_FILE_SIZE = "temp_file.size"

# --- units (UCUM) ----------------------------------------------------------------------------------------------
UNIT_SECONDS = "s"
UNIT_BYTES = "By"
