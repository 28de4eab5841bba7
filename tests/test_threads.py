"""Our background threads leave the process's signals to the threads that handle them (otel_reliability/threads.py).

CPython runs signal handlers in the main thread only; a signal the kernel hands to a background thread never
wakes a main thread asleep without a timeout. hypercorn's master sleeps so while it waits for its workers: before
threads.py, with our readings, host and metrics threads beside it, the second SIGHUP of a loop went unanswered and
the old workers served on (the test_launchers hypercorn-2 failure in CI).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from otel_reliability import threads
from tests.support import AppProcess, wait_until
from tests.test_launchers import live_instances
from tests.test_prefork import APP_DIR, StartApp

_HUP_TERM = (1 << (signal.SIGHUP - 1)) | (1 << (signal.SIGTERM - 1))


def _mask_in_thread() -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_a_started_thread_blocks_the_asynchronous_signals_and_the_starter_keeps_its_mask() -> None:
    before = _mask_in_thread()
    seen: list[set[int]] = []
    threads.start(lambda: seen.append(_mask_in_thread()), "probe").join(5)
    (inside,) = seen
    assert {signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD} <= inside
    assert not inside & {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT}
    assert _mask_in_thread() == before


def test_a_signal_sent_while_a_thread_starts_is_delivered_afterwards() -> None:
    """The starter blocks the signals only around the start: one that arrives meanwhile waits, then runs."""
    got: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda sig, frame: got.append(sig))
    try:
        with threads.blocked():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
            assert got == []  # pending while blocked
        wait_until(lambda: got, timeout=5, what="the signal once unblocked")
        assert got == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def _blocked_by_task(pid: int) -> dict[int, int]:
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line)
        found[int(task.name)] = int(status["SigBlk"], 16)
    return found


def _two_workers(app: AppProcess, old: set[str]) -> set[str] | None:
    """The two live workers' instance ids, once neither is one of ``old``."""
    live = live_instances(app)
    return live if len(live) == 2 and not live & old else None


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_hypercorns_master_answers_every_sighup(app_factory: StartApp) -> None:
    """Under opentelemetry-instrument the master's threads other than its main one (ours, the SDK's, the metrics
    server's) block SIGHUP and SIGTERM, and five SIGHUPs in a row each replace both workers."""
    app = app_factory("app:app", app_dir=APP_DIR, server="hypercorn", workers=2, timeout=60)
    before = wait_until(lambda: _two_workers(app, set()), timeout=60, what="2 workers")
    masks = _blocked_by_task(app.proc.pid)
    others = {tid: mask for tid, mask in masks.items() if tid != app.proc.pid}
    assert len(others) >= 3, masks  # readings, host, the :9464 server
    assert all(mask & _HUP_TERM == _HUP_TERM for mask in others.values()), masks
    assert masks[app.proc.pid] & _HUP_TERM == 0
    for i in range(5):
        os.kill(app.proc.pid, signal.SIGHUP)
        previous = before
        before = wait_until(lambda p=previous: _two_workers(app, p), timeout=45, interval=0.2,
                            what=f"new workers after SIGHUP {i + 1}")  # fmt: skip
    assert threading.current_thread() is threading.main_thread()
