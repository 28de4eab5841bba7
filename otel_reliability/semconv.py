"""Every metric name, attribute key and unit that more than one module spells, defined once.

Why one module: the instrumentors write these names, the health views and the host merge read them back from
the Readings, the CLI and the dashboards query their Prometheus forms. When two modules spell a name apart, a
rename in one silently empties the other (a view shows nothing, a dashboard panel goes blank). With one
spelling, a rename is one edit, and ``tests/test_architecture.py`` checks that the PromQL in the dashboard
generator, the alert rules and the fleet CLI names only these names in Prometheus form.

Naming: ``METRIC_*`` is an instrument name, ``ATTR_*`` an attribute key, ``UNIT_*`` a UCUM unit. Several OTel
names serve as both a metric and an attribute (``circuit_breaker.state``); they get one constant of each kind,
so code says which one it means. Names follow the OpenTelemetry semantic conventions where one exists
(``db.client.connection.*``, ``http.server.request.duration``, ``error.type``); the rest are this project's
(shared/CONTRACT.md). This module imports nothing, so every floor of the package may import it.
"""

from __future__ import annotations

SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
"""The semantic-conventions version our names follow, on every meter and tracer of the package: a backend that
knows schemas can translate our names when the conventions rename one."""

# --- shared attribute keys -------------------------------------------------------------------------------------
ATTR_ERROR_TYPE = "error.type"
"""Why a call, request or operation failed: the exception's class name or an HTTP status (OTel semconv)."""

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

CIRCUIT_BREAKER_STATES = ("closed", "open", "half_open")
"""The values of ``ATTR_CIRCUIT_BREAKER_STATE``."""
CIRCUIT_BREAKER_OUTCOMES = ("success", "failure", "rejected")
"""The values of ``ATTR_CIRCUIT_BREAKER_OUTCOME``."""

# --- database connection pools (OTel semconv db.client.connection.*) -------------------------------------------
METRIC_DB_CLIENT_CONNECTION_COUNT = "db.client.connection.count"
METRIC_DB_CLIENT_CONNECTION_MAX = "db.client.connection.max"
METRIC_DB_CLIENT_CONNECTION_IDLE_MAX = "db.client.connection.idle.max"
METRIC_DB_CLIENT_CONNECTION_PENDING_REQUESTS = "db.client.connection.pending_requests"
METRIC_DB_CLIENT_CONNECTION_TIMEOUTS = "db.client.connection.timeouts"
METRIC_DB_CLIENT_CONNECTION_WAIT_TIME = "db.client.connection.wait_time"
"""Histogram of checkout waits; its count is also the number of successful checkouts."""
METRIC_DB_CLIENT_CONNECTION_USE_TIME = "db.client.connection.use_time"
METRIC_DB_CLIENT_CONNECTION_CREATE_TIME = "db.client.connection.create_time"
METRIC_DB_CLIENT_CONNECTION_WAIT_TIMEOUT = "db.client.connection.wait_timeout"
METRIC_DB_CLIENT_CONNECTION_ERRORS = "db.client.connection.errors"
METRIC_DB_CLIENT_CONNECTION_INVALIDATIONS = "db.client.connection.invalidations"
METRIC_DB_CLIENT_STATEMENT_TIMEOUT = "db.client.statement_timeout"
METRIC_DB_CLIENT_TRANSACTION_RETRIES = "db.client.transaction.retries"
METRIC_DB_CLIENT_OPERATION_DURATION = "db.client.operation.duration"

ATTR_DB_CLIENT_CONNECTION_POOL_NAME = "db.client.connection.pool.name"
ATTR_DB_CLIENT_CONNECTION_STATE = "db.client.connection.state"
"""``idle`` or ``used`` on ``METRIC_DB_CLIENT_CONNECTION_COUNT``."""

# --- HTTP server (OTel semconv) --------------------------------------------------------------------------------
METRIC_HTTP_SERVER_REQUEST_DURATION = "http.server.request.duration"
ATTR_HTTP_ROUTE = "http.route"
ATTR_HTTP_REQUEST_METHOD = "http.request.method"
ATTR_HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
ATTR_URL_PATH = "url.path"
ATTR_URL_QUERY = "url.query"
ATTR_CLIENT_ADDRESS = "client.address"
ATTR_CLIENT_PORT = "client.port"

# --- process ---------------------------------------------------------------------------------------------------
METRIC_PROCESS_CPU_UTILIZATION = "process.cpu.utilization"
METRIC_PROCESS_MEMORY_USAGE = "process.memory.usage"
METRIC_PROCESS_MEMORY_LIMIT = "process.memory.limit"
METRIC_PROCESS_UNIX_FILE_DESCRIPTOR_COUNT = "process.unix.file_descriptor.count"
METRIC_PROCESS_THREAD_COUNT = "process.thread.count"

# --- tracked operations ----------------------------------------------------------------------------------------
METRIC_OPERATION_DURATION = "operation.duration"
METRIC_OPERATION_IN_FLIGHT = "operation.in_flight"
METRIC_OPERATION_STUCK = "operation.stuck"
METRIC_OPERATION_OLDEST_AGE = "operation.oldest_age"
ATTR_OPERATION_NAME = "operation.name"
ATTR_OPERATION_KEY = "operation.key"

# --- units (UCUM) ----------------------------------------------------------------------------------------------
UNIT_SECONDS = "s"
UNIT_BYTES = "By"
