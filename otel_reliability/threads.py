"""Background threads leave the process's signals to the threads that handle them.

Why: CPython runs a Python signal handler in the main thread only, when that thread next runs Python code. The
kernel hands a signal sent to the process to any one thread that does not block it; if that is a background thread,
a main thread asleep in a call without a timeout never learns of the signal. hypercorn's master waits for its
workers just so (``multiprocessing.connection.wait``), with our readings, host and metrics-server threads beside
it: a SIGHUP (reload) or a SIGTERM (stop) then went unanswered for good (the second SIGHUP of a loop here;
``tests/test_threads.py``).

So every thread this package starts, and the threads the SDK and prometheus_client start while we set them up,
block the asynchronous signals: a new thread inherits the mask of the thread that starts it, so ``blocked()`` is
held around the start. The kernel then hands such signals to a thread that takes them (the main thread, or a thread
of the application's own). A signal that arrives while the starting thread blocks it waits, pending, until the mask
is restored: nothing is lost. Signals that a fault raises in the faulting thread (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
SIGABRT, SIGTRAP, SIGSYS) are never blocked.

The bottom floor, like ``gil``: it imports nothing of ours.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_FAULTS = {"SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT", "SIGTRAP", "SIGSYS", "SIGKILL", "SIGSTOP"}
_ASYNC: set[signal.Signals] = (
    {s for s in signal.valid_signals() if isinstance(s, signal.Signals) and s.name not in _FAULTS}
    if hasattr(signal, "pthread_sigmask")
    else set()
)


@contextmanager
def blocked() -> Iterator[None]:
    """The asynchronous signals blocked in this thread for the block: threads started inside inherit that."""
    if not _ASYNC:  # a platform without thread signal masks
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _ASYNC)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start(target: Callable[..., Any], name: str, args: tuple[Any, ...] = ()) -> threading.Thread:
    """A daemon thread running ``target(*args)``, started with the asynchronous signals blocked in it."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    with blocked():
        thread.start()
    return thread


def block_in_this_thread() -> None:
    """For a thread another library creates (a pool's ``initializer``): block the asynchronous signals in it."""
    if _ASYNC:
        signal.pthread_sigmask(signal.SIG_BLOCK, _ASYNC)
