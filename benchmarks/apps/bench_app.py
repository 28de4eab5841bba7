"""The app every throughput variant serves: the same routes, with or without instrumentation.

Routes: /trivial; /db/sqlite and /db/pg (one SQLAlchemy query; engines from BENCH_SQLITE_URL / BENCH_PG_URL);
/breaker (a pybreaker call of a local function). BENCH_SEED_MIDDLEWARE=1 adds the seed's error-tracking
middleware (re-implemented below as the baseline to beat: a BaseHTTPMiddleware keeping deques of events).
BENCH_BREAKERS=N creates N extra idle breakers; BENCH_POOLS=N extra idle pools (for the health figures).
BENCH_GC=1 times every garbage collection (``gc.callbacks``) and serves the totals at /_bench/gc (figure 1c).
"""

from __future__ import annotations

import gc
import os
from collections import deque
from time import thread_time, time
from typing import Any

import pybreaker
from fastapi import FastAPI, Request
from sqlalchemy import QueuePool, create_engine, text
from starlette.middleware.base import BaseHTTPMiddleware

app = FastAPI()

_error_window: deque[dict[str, Any]] = deque(maxlen=1000)
_success_window: deque[dict[str, Any]] = deque(maxlen=1000)


class SeedErrorTrackingMiddleware(BaseHTTPMiddleware):
    """The seed's approach, as its guide writes it (section 1.2)."""

    async def dispatch(self, request: Request, call_next: Any) -> Any:
        start_time = time()
        response = await call_next(request)
        if response.status_code >= 400:
            _error_window.append({"timestamp": start_time, "status": response.status_code, "path": request.url.path})
            if len(_error_window) >= 10:
                recent = [e for e in _error_window if time() - e["timestamp"] < 60]
                if len(recent) >= 10:
                    pass  # the seed logs here
        else:
            _success_window.append({"timestamp": start_time})
        return response


if os.environ.get("BENCH_SEED_MIDDLEWARE") == "1":
    app.add_middleware(SeedErrorTrackingMiddleware)

sqlite_engine = create_engine(os.environ.get("BENCH_SQLITE_URL", "sqlite:////tmp/otel-reliability-bench.db"))
pg_url = os.environ.get("BENCH_PG_URL")
pg_engine = create_engine(pg_url, pool_size=5, max_overflow=5) if pg_url else None
breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, name="bench")
idle_breakers = [pybreaker.CircuitBreaker(name=f"idle-{i}") for i in range(int(os.environ.get("BENCH_BREAKERS", "0")))]
idle_pools = [
    create_engine(f"sqlite:////tmp/otel-reliability-bench-idle{i}.db", poolclass=QueuePool, pool_size=2, max_overflow=0)
    for i in range(int(os.environ.get("BENCH_POOLS", "0")))
]
for _engine in idle_pools:  # a connection made once, so each pool is known and has a state
    _engine.connect().close()


@app.get("/trivial")
async def trivial() -> dict[str, bool]:
    return {"ok": True}


@app.get("/db/sqlite")
def db_sqlite() -> dict[str, int]:
    with sqlite_engine.connect() as conn:
        return {"value": conn.execute(text("SELECT 1")).scalar_one()}


@app.get("/db/pg")
def db_pg() -> dict[str, int]:
    assert pg_engine is not None, "BENCH_PG_URL is not set"
    with pg_engine.connect() as conn:
        return {"value": conn.execute(text("SELECT 1")).scalar_one()}


def _dependency() -> int:
    return 1


@app.get("/breaker")
async def through_breaker() -> dict[str, int]:
    return {"value": breaker.call(_dependency)}


class _CollectorClock:
    """Time spent in the garbage collector, by generation: a ``gc.callbacks`` pair around each collection (the
    collector holds the interpreter lock and is not re-entered, so starts and stops never interleave). CPU time
    of the collecting thread, not wall time: on a loaded machine a collection preempted midway would count the
    other processes' time."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = thread_time()
            return
        generation = info["generation"]
        self.seconds[generation] += thread_time() - self._started
        self.collections[generation] += 1


if os.environ.get("BENCH_GC") == "1":
    _clock = _CollectorClock()
    gc.callbacks.append(_clock)

    @app.get("/_bench/gc")
    def collector_totals() -> dict[str, Any]:
        return {"seconds": _clock.seconds, "collections": _clock.collections, "tracked": len(gc.get_objects())}
