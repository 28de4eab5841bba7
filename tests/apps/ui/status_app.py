"""Test app for the status page: pybreaker breakers (one critical, one with a name made to be HTML), a
SQLite pool, a failing route and a long in-process operation. Run under opentelemetry-instrument.

POST /open/{index} opens breaker number ``index`` of BREAKERS (three failing calls); GET /fail answers 500.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading

import pybreaker
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from otel_reliability import track_operation

HOSTILE = "<img src=x onerror=alert(1)>"
BREAKERS = [
    pybreaker.CircuitBreaker(fail_max=3, reset_timeout=600, name=name)
    for name in ("payments", "gemini", HOSTILE, 'search "quoted" & <b>bold</b>')
]
engine = sa.create_engine(
    f"sqlite:///{os.path.join(tempfile.mkdtemp(prefix='ui-app-'), 'db.sqlite')}",
    poolclass=sa.pool.QueuePool,
    pool_size=2,
    max_overflow=1,
)
with engine.connect() as conn:
    conn.execute(sa.text("select 1"))

app = FastAPI()
_release = threading.Event()


def _boom() -> None:
    raise RuntimeError("dependency down")


@app.post("/open/{index}")
def open_breaker(index: int) -> dict[str, str]:
    breaker = BREAKERS[index]
    for _ in range(breaker.fail_max):
        with contextlib.suppress(RuntimeError, pybreaker.CircuitBreakerError):
            breaker.call(_boom)
    return {"state": breaker.current_state}


@app.get("/ok")
def ok() -> dict[str, bool]:
    with engine.connect() as conn:
        conn.execute(sa.text("select 1"))
    return {"ok": True}


@app.get("/fail/{item}")
def fail(item: str) -> JSONResponse:
    return JSONResponse({"error": item}, status_code=500)


def _long_job() -> None:
    with track_operation("nightly <export>", key="job-1"):
        _release.wait(600)


threading.Thread(target=_long_job, daemon=True).start()
