"""What a SQLAlchemy statement is called: its span name, span attributes and metric attributes in the stable
database semantic conventions, and its ``error.type`` on failure (``reliability_statements``, see
``otel_reliability.instrumentation.statements`` for how statements are timed).

The span of a statement:

- a CLIENT span named ``{db.operation.name} {db.collection.name}`` (``SELECT users``; the operation alone, or
  ``db.system.name``, when the rest is unknown), child of the current span (the request span, the
  ``db.transaction`` span of ``run_in_transaction``), with ``db.system.name``, ``db.namespace``,
  ``db.operation.name``, ``db.collection.name``, ``db.query.text`` (literals replaced by ``?``, see
  ``otel_reliability.instrumentation.sql``), ``server.address``/``server.port``, ``db.operation.batch.size``
  for ``executemany``; on failure ``error.type`` (the SQLSTATE where the driver gives one, else the exception
  class) and ``db.response.status_code``. The exception message is never recorded: drivers put values in it
  (``Key (email)=(...) already exists``).

An engine is described once (``engine_info``: ``db.system.name``, ``db.namespace``, ``server.address``/``port``,
kept beside the engine, never in it); a statement text once per engine (``describe``, cached by the caller).
The metric stays bounded: operations come from a fixed list, and after ``MAX_COLLECTIONS`` distinct table names
new ones are left out of the metric (not of the span).
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from otel_reliability import semconv
from otel_reliability.instrumentation import sql

_logger = logging.getLogger(__name__)

SYSTEM = semconv.ATTR_DB_SYSTEM_NAME
NAMESPACE = semconv.ATTR_DB_NAMESPACE
SERVER_ADDRESS = semconv.ATTR_SERVER_ADDRESS
SERVER_PORT = semconv.ATTR_SERVER_PORT
OPERATION = semconv.ATTR_DB_OPERATION_NAME
COLLECTION = semconv.ATTR_DB_COLLECTION_NAME
QUERY_TEXT = semconv.ATTR_DB_QUERY_TEXT
BATCH_SIZE = semconv.ATTR_DB_OPERATION_BATCH_SIZE
ERROR_TYPE = semconv.ATTR_ERROR_TYPE
STATUS_CODE = semconv.ATTR_DB_RESPONSE_STATUS_CODE
WAIT_EVENT = semconv.EVENT_DB_CLIENT_CONNECTION_WAIT
_METRIC_ENGINE_ATTRS = frozenset({SYSTEM, NAMESPACE, SERVER_ADDRESS, SERVER_PORT})
MAX_COLLECTIONS = 200

# SQLAlchemy dialect name -> db.system.name (stable semantic conventions).
_SYSTEMS = {
    "postgresql": "postgresql",
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "mssql": "microsoft.sql_server",
    "oracle": "oracle.db",
}


@dataclass(frozen=True, eq=False)  # hashed by identity: a key of the statement cache
class EngineInfo:
    system: str
    mysql: bool
    span_attrs: dict[str, Any]


# id(engine) -> its EngineInfo, read on every statement (a plain dict; the entry goes with the engine).
engines: dict[int, EngineInfo] = {}
_engine_refs: dict[int, weakref.ref[Any]] = {}
_collections: set[str] = set()
_collections_lock = threading.Lock()


def engine_info(engine: Any) -> EngineInfo:
    """The attributes every statement of ``engine`` carries, computed once per engine."""
    info = engines.get(id(engine))
    if info is not None:
        return info
    dialect = str(engine.dialect.name)
    system = _SYSTEMS.get(dialect, "other_sql")
    url = engine.url
    attrs: dict[str, Any] = {SYSTEM: system}
    if url.database and dialect != "sqlite":  # a SQLite "database" is a file path: not a namespace worth a label
        attrs[NAMESPACE] = str(url.database)
    if url.host:
        attrs[SERVER_ADDRESS] = str(url.host)
    if url.port:
        attrs[SERVER_PORT] = int(url.port)
    info = EngineInfo(system, dialect in ("mysql", "mariadb"), attrs)
    key = id(engine)
    try:
        # The callback runs before the engine's id can be reused.
        _engine_refs[key] = weakref.ref(engine, lambda _ref: (engines.pop(key, None), _engine_refs.pop(key, None)))
    except TypeError:  # an engine that cannot be weakly referenced: described again on every statement
        return info
    engines[key] = info
    return info


def forget_collections() -> None:
    """Start the MAX_COLLECTIONS count again (a new instrumentation: a new histogram)."""
    with _collections_lock:
        _collections.clear()


def _bounded(collection: str) -> bool:
    """Whether ``collection`` may be a metric label (the first MAX_COLLECTIONS distinct names may)."""
    if collection in _collections:
        return True
    with _collections_lock:
        if len(_collections) >= MAX_COLLECTIONS:
            return False
        _collections.add(collection)
    return True


def describe(statement: str, info: EngineInfo, batch: bool) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(span name, span attributes, metric attributes) of a statement text on an engine."""
    try:
        parsed = sql.describe(statement, mysql=info.mysql)
    except Exception:  # never let odd SQL break a query: say nothing rather than something wrong
        _logger.debug("otel-reliability: could not describe a statement", exc_info=True)
        parsed = sql.Statement("", None, None)
    operation = parsed.operation
    if operation is not None and batch:
        operation = f"BATCH {operation}"
    span_attrs = dict(info.span_attrs)
    # The stable convention's attributes of db.client.operation.duration: db.namespace (conditionally required),
    # server.address / server.port (recommended): one value per engine, so bounded.
    metric_attrs = {k: v for k, v in info.span_attrs.items() if k in _METRIC_ENGINE_ATTRS}
    if parsed.query_text:
        span_attrs[QUERY_TEXT] = parsed.query_text
    if operation is not None:
        span_attrs[OPERATION] = metric_attrs[OPERATION] = operation
    if parsed.collection is not None:
        span_attrs[COLLECTION] = parsed.collection
        if _bounded(parsed.collection):
            metric_attrs[COLLECTION] = parsed.collection
    name = " ".join(p for p in (operation, parsed.collection) if p) or info.system
    return name, span_attrs, metric_attrs


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error (psycopg, psycopg2, asyncpg), also when SQLAlchemy wrapped it."""
    orig = getattr(exc, "orig", None) or exc
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str) and code:
            return code
    return None


def error_type(exc: BaseException) -> str:
    """The SQLSTATE where the driver gives one (bounded, what the conventions ask for), else the class name."""
    code = sqlstate(exc)
    if code is not None:
        return code
    return semconv.error_type(getattr(exc, "orig", None) or exc)  # the driver's error SQLAlchemy wrapped
