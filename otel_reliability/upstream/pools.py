"""SQLAlchemy's pool internals read for the pool figures and the pool name (see ``otel_reliability.upstream``),
and the class-level dispatch's ``_clear`` wrapped to keep our pool listeners listened."""

from __future__ import annotations

import re
import threading
import weakref
from typing import Any

from otel_reliability.upstream._registry import guard, usable

_QUEUE_STATUS = re.compile(
    r"Pool size: (-?\d+)\s+Connections in pool: (-?\d+)\s+Current Overflow: (-?\d+)\s+Current Checked out "
    r"connections: (-?\d+)"
)
_SINGLETON_STATUS = re.compile(r"size: (\d+)$")


class _Connection:
    """A scratch DBAPI connection: what a pool calls on one (no driver imported for the checks)."""

    def rollback(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


def _creator() -> Any:
    return _Connection()


@guard(
    "sqlalchemy.max_overflow",
    "sqlalchemy.pool",
    ("QueuePool._max_overflow",),
    "a QueuePool's max_overflow as built (-1 for pool_size=0), beside the counts its status() shows",
    "db.client.connection.max not published for QueuePools (it has no other source)",
)
def _check_max_overflow() -> bool:
    from sqlalchemy.pool import QueuePool

    queue = QueuePool(_creator, pool_size=2, max_overflow=3)
    held = [queue.connect() for _ in range(3)]
    try:
        status = _QUEUE_STATUS.search(queue.status())
        counted = (queue.size(), queue.checkedin(), queue.overflow(), queue.checkedout())
        shown = status is not None and tuple(map(int, status.groups())) == counted == (2, 0, 1, 3)
        built = queue._max_overflow == 3
    finally:
        for connection in held:
            connection.close()
        queue.dispose()
    return shown and built and QueuePool(_creator, pool_size=0, max_overflow=5)._max_overflow == -1


@guard(
    "sqlalchemy.singleton_conns",
    "sqlalchemy.pool",
    ("SingletonThreadPool._all_conns",),
    "a SingletonThreadPool's open connections, the set its status() counts",
    "the count its public status() shows",
)
def _check_singleton_conns() -> bool:
    from sqlalchemy.pool import SingletonThreadPool

    singleton = SingletonThreadPool(_creator, pool_size=3)
    connection = singleton.connect()
    try:
        return len(singleton._all_conns) == singleton_open(singleton) == 1
    finally:
        connection.close()
        singleton.dispose()


@guard(
    "sqlalchemy.logging_name",
    "sqlalchemy.pool",
    ("Pool._orig_logging_name",),
    "the logging_name a pool was built with (None when none), kept by recreate()",
    "the pool's public logging_name (the same value)",
)
def _check_logging_name() -> bool:
    from sqlalchemy.pool import QueuePool

    named, plain = QueuePool(_creator, logging_name="upstream-check"), QueuePool(_creator)
    again = named.recreate()
    names = (named._orig_logging_name, again._orig_logging_name, again.logging_name, plain._orig_logging_name)
    return names == ("upstream-check",) * 3 + (None,) and plain.logging_name is None


def singleton_open(pool: Any) -> int:
    """The connections a SingletonThreadPool holds open, from its public ``status()``."""
    found = _SINGLETON_STATUS.search(pool.status())
    return int(found.group(1)) if found else 0


def max_overflow(pool: Any) -> int | None:
    """A QueuePool's ``max_overflow`` (-1: no limit); None where it cannot be read (no maximum is published)."""
    return int(pool._max_overflow) if usable("sqlalchemy.max_overflow") else None


def open_connections(pool: Any) -> int:
    """The connections a SingletonThreadPool holds open."""
    return len(pool._all_conns) if usable("sqlalchemy.singleton_conns") else singleton_open(pool)


def logging_name(pool: Any) -> str | None:
    """The ``logging_name`` a pool was built with (also across ``recreate()``)."""
    if usable("sqlalchemy.logging_name"):
        return pool._orig_logging_name  # type: ignore[no-any-return]
    return getattr(pool, "logging_name", None)


@guard(
    "sqlalchemy.dispatch_clear",
    "sqlalchemy.pool",
    ("_Dispatch._clear", "Pool.dispatch"),
    "the one method through which a class-level dispatch's clear() removes every class-level listener "
    "(inherited from _Dispatch by the Pool class's dispatch)",
    "our pool listeners checked (event.contains) and listened again at each checkout, ~1 µs each",
)
def _check_dispatch_clear() -> bool:
    from sqlalchemy import event
    from sqlalchemy.event.base import _Dispatch
    from sqlalchemy.pool import Pool

    pool_dispatch = type(Pool.dispatch)
    if not issubclass(pool_dispatch, _Dispatch) or not callable(getattr(pool_dispatch, "_clear", None)):
        return False

    class Target:  # a scratch event target of its own: clearing it clears no one else's listeners
        pass

    class Events(event.Events):  # type: ignore[type-arg,misc]
        _dispatch_target = Target

        def otel_reliability_upstream_check(self, value: Any) -> None:
            """A scratch event."""

    seen: list[Any] = []
    listener = seen.append
    event.listen(Target, "otel_reliability_upstream_check", listener)
    listened = event.contains(Target, "otel_reliability_upstream_check", listener)
    dispatch = Target.dispatch  # type: ignore[attr-defined]
    scratch = type(dispatch)
    own = "_clear" in vars(pool_dispatch)  # the Pool's dispatch class must clear the same way as this one
    same = own or getattr(pool_dispatch, "_clear") is getattr(scratch, "_clear")  # noqa: B009
    dispatch._clear()
    cleared = not event.contains(Target, "otel_reliability_upstream_check", listener)
    return listened and same and cleared


@guard(
    "sqlalchemy.connection_record",
    "sqlalchemy.pool",
    ("_ConnectionFairy._connection_record", "_ConnectionRecord__pool"),
    "a checked-out connection's record, the very object the pool's connect and checkin events are given, and "
    "each record's pool",
    "the record as the pool's public checkout event gives it, and the pool each record was checked out from",
)
def _check_connection_record() -> bool:
    from sqlalchemy import event
    from sqlalchemy.pool import QueuePool

    pool = QueuePool(_creator, pool_size=1, max_overflow=0)
    told: list[tuple[str, Any]] = []
    event.listen(pool, "connect", lambda _dbapi, record: told.append(("connect", record)))  # this pool's only
    event.listen(pool, "checkin", lambda _dbapi, record: told.append(("checkin", record)))
    try:
        connection = pool.connect()
        record = connection._connection_record
        owner = getattr(record, "_ConnectionRecord__pool", None)
        connection.close()
    finally:
        pool.dispose()
    return owner is pool and told == [("connect", record), ("checkin", record)]


_checkout = threading.local()  # the pool a connect() of ours is checking a connection out of, in this thread
_records: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # checked-out connection -> record
_owners: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # record -> its pool


def record_events() -> bool:
    """Whether records must be learnt from the pool's checkout event (``on_checkout``, listened by the caller)."""
    return not usable("sqlalchemy.connection_record")


def checking_out(pool: Any) -> None:
    """Our ``Pool.connect`` is about to check a connection out of ``pool`` (None: done)."""
    _checkout.pool = pool


def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """The pool's checkout event, listened only where ``record_events()``."""
    _records[proxy] = record
    pool = getattr(_checkout, "pool", None)
    if pool is not None:
        _owners[record] = pool


def record_of(connection: Any) -> Any:
    """The record of a connection just checked out."""
    if usable("sqlalchemy.connection_record"):
        return connection._connection_record
    return _records.pop(connection, None)


def pool_of(record: Any) -> Any:
    """The pool a record belongs to (None if unknown); its first connect is seen while it is checked out."""
    if usable("sqlalchemy.connection_record"):
        return getattr(record, "_ConnectionRecord__pool", None)
    owner = _owners.get(record)
    if owner is None:
        owner = getattr(_checkout, "pool", None)
        if owner is not None:
            _owners[record] = owner
    return owner
