"""The app the fault suite (benchmarks/faults.py, tests/test_faults_*.py) drives, run under opentelemetry-instrument.

- ``GET /ping``: the cheapest request that still counts in the HTTP metrics (lost-count checks).
- With ``DATABASE_URL``: ``GET /db/read`` (one query; 503 when the database fails), ``POST /db/increment``
  (an idempotent increment under SERIALIZABLE through ``run_in_transaction``: a request id is recorded in the
  same transaction, so a retry after a connection lost during COMMIT cannot count twice), ``GET /db/count``.
- ``GET /flaky/{library}``: a dependency behind a pybreaker or a circuitbreaker breaker; ``POST /control/flap``
  makes it fail and recover every ``period`` seconds for ``seconds``. ``GET /debug/transitions``: the
  transitions each library made, counted by the library's own listener (pybreaker) or by watching the state it
  reports at every call (circuitbreaker has no listeners): the figure the exported transitions must equal.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import circuitbreaker
import pybreaker
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.orm import sessionmaker

import otel_reliability

app = FastAPI()
DATABASE_URL = os.environ.get("DATABASE_URL")
engine = (
    sa.create_engine(DATABASE_URL, pool_size=8, max_overflow=4, pool_timeout=3, connect_args={"connect_timeout": 2})
    if DATABASE_URL
    else None
)
Serializable = sessionmaker(bind=engine.execution_options(isolation_level="SERIALIZABLE")) if engine else None
if engine is not None:
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE IF NOT EXISTS counter (id int PRIMARY KEY, n int NOT NULL)"))
        c.execute(sa.text("CREATE TABLE IF NOT EXISTS applied (request_id text PRIMARY KEY)"))
        c.execute(sa.text("INSERT INTO counter VALUES (1, 0) ON CONFLICT DO NOTHING"))


@app.get("/ping")
def ping() -> dict[str, bool]:
    return {"ok": True}


@app.get("/db/read")
def db_read() -> JSONResponse:
    assert engine is not None
    try:
        with engine.connect() as c:
            return JSONResponse({"n": c.execute(sa.text("SELECT n FROM counter WHERE id = 1")).scalar_one()})
    except sa.exc.SQLAlchemyError as exc:
        return JSONResponse({"error": type(exc).__name__}, status_code=503)


@app.post("/db/increment")
def db_increment(request_id: str) -> JSONResponse:
    def work(session: Any) -> bool:
        inserted = session.execute(
            sa.text("INSERT INTO applied VALUES (:rid) ON CONFLICT DO NOTHING RETURNING request_id"),
            {"rid": request_id},
        ).first()
        if inserted is not None:
            session.execute(sa.text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        return inserted is not None

    try:
        return JSONResponse({"applied": otel_reliability.run_in_transaction(Serializable, work)})
    except sa.exc.SQLAlchemyError as exc:
        return JSONResponse({"error": type(exc).__name__}, status_code=503)


@app.get("/db/count")
def db_count() -> dict[str, int]:
    assert engine is not None
    with engine.connect() as c:
        n = c.execute(sa.text("SELECT n FROM counter WHERE id = 1")).scalar_one()
        applied = c.execute(sa.text("SELECT count(*) FROM applied")).scalar_one()
    return {"n": int(n), "applied": int(applied)}


# --- a flapping dependency behind two breaker libraries ------------------------------------------------------
class DependencyDown(Exception):
    pass


flap = {"until": 0.0, "period": 0.5, "start": 0.0}


def dependency() -> str:
    now = time.monotonic()
    if now < flap["until"] and int((now - flap["start"]) / flap["period"]) % 2 == 0:
        raise DependencyDown("flapping: down in this half-period")
    return "ok"


@app.post("/control/flap")
def control_flap(seconds: float, period: float = 0.5) -> dict[str, float]:
    flap.update(start=time.monotonic(), until=time.monotonic() + seconds, period=period)
    return flap


transitions = {"pybreaker": 0, "circuitbreaker": 0}
_lock = threading.Lock()


class CountTransitions(pybreaker.CircuitBreakerListener):
    """pybreaker's own listener: called by the library at every state change it makes."""

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        with _lock:
            transitions["pybreaker"] += 1


py_breaker = pybreaker.CircuitBreaker(
    fail_max=3, reset_timeout=0.2, name="flappy_pybreaker", listeners=[CountTransitions()]
)


class WatchedCircuitBreaker(circuitbreaker.CircuitBreaker):
    """circuitbreaker has no listeners: every state the library reports around a call is compared with the
    last one it reported (half-open is computed by the library from the time, so it is seen at a call)."""

    FAILURE_THRESHOLD = 3
    RECOVERY_TIMEOUT = 0.2
    EXPECTED_EXCEPTION = DependencyDown
    last_seen = circuitbreaker.STATE_CLOSED

    def _see(self) -> None:
        state = self.state
        with _lock:
            if state != self.last_seen:
                transitions["circuitbreaker"] += 1
                self.last_seen = state

    def __enter__(self) -> None:
        self._see()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> bool:
        result = super().__exit__(*exc)
        self._see()
        return bool(result)


cb_breaker = WatchedCircuitBreaker(name="flappy_circuitbreaker")


@app.get("/flaky/{library}")
def flaky(library: str) -> JSONResponse:
    try:
        if library == "pybreaker":
            return JSONResponse({"result": py_breaker.call(dependency)})
        if cb_breaker.opened:
            cb_breaker._see()
            raise circuitbreaker.CircuitBreakerError(cb_breaker)
        return JSONResponse({"result": cb_breaker.call(dependency)})
    except (pybreaker.CircuitBreakerError, circuitbreaker.CircuitBreakerError):
        return JSONResponse({"error": "rejected"}, status_code=503)
    except DependencyDown:
        return JSONResponse({"error": "dependency failed"}, status_code=502)


@app.get("/debug/transitions")
def debug_transitions() -> dict[str, int]:
    with _lock:
        return dict(transitions)
