"""FastAPI patched one way: the package's hooks on FastAPI apps (the HTTP layer, the health mount, the breakers'
503 mapping) are registered here, and this module alone wraps FastAPI's methods.

Two moments of an app are hooked:

- ``FastAPI.__init__``: before it, a hook may default constructor keywords (the HTTP layer's ``telemetry=``;
  the app's own keys win); after it, a hook gets the app (the lean layer, the health routes);
- ``FastAPI.build_middleware_stack`` (an app's first request, when its routes and handlers are final): before it,
  a hook gets the app (the breakers' exception handlers); around it, a hook may put a middleware outside the
  stack built (the lean HTTP layer, outside ServerErrorMiddleware).

Each method is wrapped once, with wrapt (the instrumentor idiom, ``_instrumented``), on the base class
``fastapi.applications.FastAPI``, so the subclass that contrib's FastAPI instrumentor substitutes runs the hooks
too, whatever order the instrumentors load in. ``add`` wraps a method when its first hook comes, ``remove``
unwraps it when its last one goes (and only if our wrapper is still the outermost: someone else's wrapper on top
stays, ours then runs no hook). Hooks run in the order they were added. Neither method is on a request path.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.instrumentation.utils import unwrap

INIT = "__init__"
BUILD = "build_middleware_stack"


@dataclass(frozen=True, eq=False)
class Hook:
    """What to do at one of the two moments (``method``: ``INIT`` or ``BUILD``); compared by identity."""

    method: str
    before: Callable[[Any], object] | None = None
    """``INIT``: called with the constructor's keyword arguments (a dict it may change); ``BUILD``: with the app."""
    after: Callable[[Any, Any], Any] | None = None
    """``INIT``: called with (the app, None); ``BUILD``: with (the app, the stack built), returns the stack to use."""


_hooks: dict[str, list[Hook]] = {INIT: [], BUILD: []}
_ours: dict[str, Any] = {}  # method -> the wrapper we put on FastAPI (to unwrap only our own)


def add(hook: Hook) -> None:
    """Run ``hook`` for every app from now on (FastAPI must be imported: call it from an ``on_import`` callback)."""
    from fastapi import applications
    from wrapt import wrap_function_wrapper

    hooks = _hooks[hook.method]
    if hook in hooks:
        return
    hooks.append(hook)
    cls = applications.FastAPI
    if _ours.get(hook.method) is None or vars(cls).get(hook.method) is not _ours[hook.method]:
        wrap_function_wrapper(applications, f"FastAPI.{hook.method}", _init if hook.method == INIT else _build)
        _ours[hook.method] = vars(cls)[hook.method]


def remove(hook: Hook) -> None:
    """Stop running ``hook``; the method is unwrapped when no hook is left."""
    hooks = _hooks[hook.method]
    if hook in hooks:
        hooks.remove(hook)
    ours = _ours.get(hook.method)
    if hooks or ours is None:
        return
    from fastapi import applications

    if vars(applications.FastAPI).get(hook.method) is ours:
        unwrap(applications.FastAPI, hook.method)
        del _ours[hook.method]


def _init(wrapped: Any, instance: Any, args: Any, kwargs: MutableMapping[str, Any]) -> None:
    hooks = tuple(_hooks[INIT])
    keywords = dict(kwargs)
    for hook in hooks:
        if hook.before is not None:
            hook.before(keywords)
    wrapped(*args, **keywords)
    for hook in hooks:
        if hook.after is not None:
            hook.after(instance, None)


def _build(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    hooks = tuple(_hooks[BUILD])
    for hook in hooks:
        if hook.before is not None:
            hook.before(instance)
    stack = wrapped(*args, **kwargs)
    for hook in hooks:
        if hook.after is not None:
            stack = hook.after(instance, stack)
    return stack
