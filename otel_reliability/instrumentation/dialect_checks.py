"""The statements SQLAlchemy runs for a dialect's own first-connect checks (server version, default schema,
``standard_conforming_strings``, ...) are not the application's, and the statement hooks leave them out.

Why: SQLAlchemy runs them on a connection it makes without the engine's events, so its statement events never
showed them; a service's first request would otherwise carry two or three extra statements in its metric and
spans. Where: they run inside ``Dialect.initialize(connection)`` (a public method of SQLAlchemy's dialect
interface, called once per engine on its first connection), so ``quiet_initialize`` is put on each dialect class
that defines it (a subclass runs its own checks after ``super().initialize``), and ``initializing()`` tells a
hook that it runs inside one. A context variable, not a flag: another thread's or coroutine's statements at the
same moment are the application's.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

METHOD = "initialize"
_initializing: ContextVar[bool] = ContextVar("otel_reliability_dialect_initializing", default=False)


def initializing() -> bool:
    """Whether the caller runs inside a dialect's ``initialize`` (its first-connect checks)."""
    return _initializing.get()


def quiet_initialize(original: Callable[..., Any]) -> Callable[..., Any]:
    """The override of a dialect class's ``initialize`` (``_instrumented.override``): ``original`` run with
    ``initializing()`` true."""

    def initialize(self: Any, connection: Any) -> Any:
        token = _initializing.set(True)
        try:
            return original(self, connection)
        finally:
            _initializing.reset(token)

    return initialize
