"""The OpenTelemetry context read and set without the API's layers, on the one path that does it for every request
(the SERVER span, ``_server_span.py``).

Why: ``context.get_current()``, ``trace.get_current_span()``, ``trace.set_span_in_context()``,
``context.attach()`` and ``detach()`` are about ten Python calls around one ``ContextVar``'s ``get``, ``set`` and
``reset``. On a request the sampler drops (nine in ten at a 0.1 ratio) they were most of what its span cost.

How, with public names only: the API's default runtime context keeps the current ``Context`` in a ``ContextVar``,
and ``context.attach()`` returns that variable's ``Token``, whose ``var`` is the variable; the key under which
``trace.set_span_in_context()`` puts a span is the one key of the ``Context`` it returns. ``runtime()`` finds both
once and checks them on a probe, both ways (what the API attaches the variable holds; what the variable is set to
the API reads as current, span included). With another runtime context (``OTEL_PYTHON_CONTEXT``), or when the
probe disagrees, it answers None and the caller uses the API's functions.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from opentelemetry import context, trace
from opentelemetry.context import Context

_logger = logging.getLogger("otel_reliability")

_found: tuple[contextvars.ContextVar[Context], str] | bool | None = False


def runtime() -> tuple[contextvars.ContextVar[Context], str] | None:
    """The ``ContextVar`` holding the current OTel ``Context`` and the key of the current span in it, or None when
    they cannot be used directly (checked once)."""
    global _found
    if _found is False:
        _found = _probe()
        if _found is None:
            _logger.debug("otel-reliability: the OpenTelemetry context is set through its API (not a ContextVar)")
    return _found  # type: ignore[return-value]


def _probe() -> tuple[contextvars.ContextVar[Context], str] | None:
    try:
        probe = trace.NonRecordingSpan(trace.SpanContext(0x1, 0x2, False))
        made = trace.set_span_in_context(probe, Context())
        if len(made) != 1:
            return None
        (key,) = made.keys()
        before = context.get_current()
        token: Any = context.attach(made)
        try:
            var = getattr(token, "var", None)
            attached = (
                isinstance(token, contextvars.Token) and isinstance(var, contextvars.ContextVar)
                and var.get() is made and trace.get_current_span() is probe
            )  # fmt: skip
        finally:
            context.detach(token)
        if not attached or context.get_current() is not before:
            return None
        with_span = Context({**before, key: probe})
        set_directly = var.set(with_span)  # type: ignore[union-attr]
        try:
            read = context.get_current() is with_span and trace.get_current_span() is probe
        finally:
            var.reset(set_directly)  # type: ignore[union-attr]
        return (var, key) if read and context.get_current() is before else None  # type: ignore[return-value]
    except Exception:
        return None
