"""uvicorn's record of the signals that stop it (see ``otel_reliability.upstream``): whether a server stops
because the process was told to (then the final export runs) or from code (the process goes on)."""

from __future__ import annotations

import signal
import weakref
from typing import Any

from otel_reliability.upstream._registry import guard, usable

_signalled: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()


@guard(
    "uvicorn.captured_signals",
    "uvicorn.server",
    ("Server._captured_signals",),
    "a list, empty on a new server, to which handle_exit() (uvicorn's signal handler) appends each signal",
    "the signals noted by a wrapper of the public Server.handle_exit",
)
def _check_captured_signals() -> bool:
    from uvicorn.config import Config  # not uvicorn itself: this runs as uvicorn's package imports uvicorn.server
    from uvicorn.server import Server

    server = Server(Config(app=lambda *args: None, log_config=None))
    fresh = server._captured_signals == []
    server.handle_exit(signal.SIGTERM, None)
    return fresh and server._captured_signals == [signal.SIGTERM] and server.should_exit is True


def needs_signal_wrapper() -> bool:
    """Whether ``Server.handle_exit`` must be wrapped (with ``note_signal``) to know a server's signals."""
    return not usable("uvicorn.captured_signals")


def note_signal(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """A wrapt wrapper of ``Server.handle_exit(sig, frame)``."""
    _signalled.setdefault(instance, []).append(args[0] if args else kwargs.get("sig"))
    return wrapped(*args, **kwargs)


def signalled(server: Any) -> bool | None:
    """Whether a signal told this uvicorn server to stop; None if it is not a server we can tell for."""
    if usable("uvicorn.captured_signals"):
        captured = getattr(server, "_captured_signals", None)
        return bool(captured) if isinstance(captured, list) else None
    return bool(_signalled.get(server))
