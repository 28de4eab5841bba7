"""The names otel_reliability.semconv re-exports are the OpenTelemetry package's, with the text we have always
emitted; the names it spells itself are ours or checked against the package; ``error.type`` is computed by one
function, for every source that sets it."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from otel_reliability import semconv

STABLE = "opentelemetry.semconv.attributes."
METRICS = "opentelemetry.semconv.metrics."
DEVELOPMENT = "opentelemetry.semconv._incubating."

# our constant: (the package's module and constant, the text on the wire)
REEXPORTED: dict[str, tuple[str, str]] = {
    "ATTR_ERROR_TYPE": (STABLE + "error_attributes.ERROR_TYPE", "error.type"),
    "METRIC_HTTP_SERVER_REQUEST_DURATION": (METRICS + "http_metrics.HTTP_SERVER_REQUEST_DURATION",
                                            "http.server.request.duration"),
    "ATTR_HTTP_ROUTE": (STABLE + "http_attributes.HTTP_ROUTE", "http.route"),
    "ATTR_HTTP_REQUEST_METHOD": (STABLE + "http_attributes.HTTP_REQUEST_METHOD", "http.request.method"),
    "ATTR_HTTP_RESPONSE_STATUS_CODE": (STABLE + "http_attributes.HTTP_RESPONSE_STATUS_CODE",
                                       "http.response.status_code"),
    "ATTR_URL_PATH": (STABLE + "url_attributes.URL_PATH", "url.path"),
    "ATTR_URL_QUERY": (STABLE + "url_attributes.URL_QUERY", "url.query"),
    "ATTR_URL_SCHEME": (STABLE + "url_attributes.URL_SCHEME", "url.scheme"),
    "ATTR_NETWORK_PROTOCOL_VERSION": (STABLE + "network_attributes.NETWORK_PROTOCOL_VERSION",
                                      "network.protocol.version"),
    "ATTR_CLIENT_ADDRESS": (STABLE + "client_attributes.CLIENT_ADDRESS", "client.address"),
    "ATTR_CLIENT_PORT": (STABLE + "client_attributes.CLIENT_PORT", "client.port"),
    "ATTR_SERVER_ADDRESS": (STABLE + "server_attributes.SERVER_ADDRESS", "server.address"),
    "ATTR_SERVER_PORT": (STABLE + "server_attributes.SERVER_PORT", "server.port"),
    "METRIC_DB_CLIENT_OPERATION_DURATION": (METRICS + "db_metrics.DB_CLIENT_OPERATION_DURATION",
                                            "db.client.operation.duration"),
    "ATTR_DB_SYSTEM_NAME": (STABLE + "db_attributes.DB_SYSTEM_NAME", "db.system.name"),
    "ATTR_DB_NAMESPACE": (STABLE + "db_attributes.DB_NAMESPACE", "db.namespace"),
    "ATTR_DB_OPERATION_NAME": (STABLE + "db_attributes.DB_OPERATION_NAME", "db.operation.name"),
    "ATTR_DB_COLLECTION_NAME": (STABLE + "db_attributes.DB_COLLECTION_NAME", "db.collection.name"),
    "ATTR_DB_QUERY_TEXT": (STABLE + "db_attributes.DB_QUERY_TEXT", "db.query.text"),
    "ATTR_DB_OPERATION_BATCH_SIZE": (STABLE + "db_attributes.DB_OPERATION_BATCH_SIZE", "db.operation.batch.size"),
    "ATTR_DB_RESPONSE_STATUS_CODE": (STABLE + "db_attributes.DB_RESPONSE_STATUS_CODE", "db.response.status_code"),
    "ATTR_EXCEPTION_TYPE": (STABLE + "exception_attributes.EXCEPTION_TYPE", "exception.type"),
    "ATTR_EXCEPTION_MESSAGE": (STABLE + "exception_attributes.EXCEPTION_MESSAGE", "exception.message"),
    "ATTR_EXCEPTION_STACKTRACE": (STABLE + "exception_attributes.EXCEPTION_STACKTRACE", "exception.stacktrace"),
    "ATTR_EXCEPTION_ESCAPED": (STABLE + "exception_attributes.EXCEPTION_ESCAPED", "exception.escaped"),
    "ATTR_SERVICE_NAME": (STABLE + "service_attributes.SERVICE_NAME", "service.name"),
    "ATTR_SERVICE_INSTANCE_ID": (STABLE + "service_attributes.SERVICE_INSTANCE_ID", "service.instance.id"),
    "METRIC_DB_CLIENT_CONNECTION_COUNT": (DEVELOPMENT + "metrics.db_metrics.DB_CLIENT_CONNECTION_COUNT",
                                          "db.client.connection.count"),
    "METRIC_DB_CLIENT_CONNECTION_MAX": (DEVELOPMENT + "metrics.db_metrics.DB_CLIENT_CONNECTION_MAX",
                                        "db.client.connection.max"),
    "METRIC_DB_CLIENT_CONNECTION_IDLE_MAX": (DEVELOPMENT + "metrics.db_metrics.DB_CLIENT_CONNECTION_IDLE_MAX",
                                             "db.client.connection.idle.max"),
    "METRIC_DB_CLIENT_CONNECTION_PENDING_REQUESTS": (
        DEVELOPMENT + "metrics.db_metrics.DB_CLIENT_CONNECTION_PENDING_REQUESTS",
        "db.client.connection.pending_requests",
    ),
    "METRIC_DB_CLIENT_CONNECTION_TIMEOUTS": (DEVELOPMENT + "metrics.db_metrics.DB_CLIENT_CONNECTION_TIMEOUTS",
                                             "db.client.connection.timeouts"),
    "METRIC_DB_CLIENT_CONNECTION_WAIT_TIME": (DEVELOPMENT + "metrics.db_metrics.DB_CLIENT_CONNECTION_WAIT_TIME",
                                              "db.client.connection.wait_time"),
    "METRIC_DB_CLIENT_CONNECTION_USE_TIME": (DEVELOPMENT + "metrics.db_metrics.DB_CLIENT_CONNECTION_USE_TIME",
                                             "db.client.connection.use_time"),
    "METRIC_DB_CLIENT_CONNECTION_CREATE_TIME": (DEVELOPMENT + "metrics.db_metrics.DB_CLIENT_CONNECTION_CREATE_TIME",
                                                "db.client.connection.create_time"),
    # spelled in semconv.py (their module costs start-up time), checked against the package here all the same
    "ATTR_DB_CLIENT_CONNECTION_POOL_NAME": (DEVELOPMENT + "attributes.db_attributes.DB_CLIENT_CONNECTION_POOL_NAME",
                                            "db.client.connection.pool.name"),
    "ATTR_DB_CLIENT_CONNECTION_STATE": (DEVELOPMENT + "attributes.db_attributes.DB_CLIENT_CONNECTION_STATE",
                                        "db.client.connection.state"),
    "METRIC_PROCESS_CPU_UTILIZATION": (DEVELOPMENT + "metrics.process_metrics.PROCESS_CPU_UTILIZATION",
                                       "process.cpu.utilization"),
    "METRIC_PROCESS_MEMORY_USAGE": (DEVELOPMENT + "metrics.process_metrics.PROCESS_MEMORY_USAGE",
                                    "process.memory.usage"),
    "METRIC_PROCESS_UNIX_FILE_DESCRIPTOR_COUNT": (
        DEVELOPMENT + "metrics.process_metrics.PROCESS_UNIX_FILE_DESCRIPTOR_COUNT", "process.unix.file_descriptor.count"
    ),
    "METRIC_PROCESS_THREAD_COUNT": (DEVELOPMENT + "metrics.process_metrics.PROCESS_THREAD_COUNT",
                                    "process.thread.count"),
    "METRIC_PROCESS_OPEN_FILE_DESCRIPTOR_COUNT": (
        DEVELOPMENT + "metrics.process_metrics.PROCESS_OPEN_FILE_DESCRIPTOR_COUNT", "process.open_file_descriptor.count"
    ),
}  # fmt: skip

# Names this project defines (shared/CONTRACT.md): the package must not define them, or we would re-export it.
OURS_PREFIXES = ("circuit_breaker.", "operation.", "temp_file.", "db.transaction", "db.client.connection.wait_timeout",
                 "db.client.connection.errors", "db.client.connection.invalidations", "db.client.statement_timeout",
                 "db.client.transaction.retries", "db.client.connection.wait", "process.memory.limit")  # fmt: skip


def _package_value(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("constant", sorted(REEXPORTED))
def test_a_reexported_name_is_the_packages_with_the_text_we_emit(constant: str) -> None:
    where, text = REEXPORTED[constant]
    assert getattr(semconv, constant) == _package_value(where) == text


def test_every_name_is_either_reexported_or_ours() -> None:
    """A constant spelled in semconv.py that the package also publishes should come from the package."""
    named = {
        constant: value
        for constant, value in vars(semconv).items()
        if constant.startswith(("ATTR_", "METRIC_", "EVENT_", "SPAN_")) and isinstance(value, str)
    }
    unexplained = {
        constant
        for constant, value in named.items()
        if constant not in REEXPORTED and not value.startswith(OURS_PREFIXES)
    }
    assert sorted(unexplained) == []


class _Custom(Exception):
    pass


def test_error_type_is_the_qualified_class_name_or_the_bare_one_where_asked() -> None:
    assert semconv.error_type(TimeoutError()) == "TimeoutError"
    assert semconv.error_type(_Custom()) == f"{__name__}._Custom"
    assert semconv.error_type(_Custom(), qualified=False) == "_Custom"
    assert semconv.error_type(TimeoutError(), qualified=False) == "TimeoutError"
