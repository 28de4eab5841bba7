"""A prefork test app: /block holds its worker's event loop, so concurrent calls spread over the workers.

/fail answers 500 (a failing request for the error-rate window); /dependency calls a pybreaker breaker
around a dependency that always fails (fail_max 1: one failed call opens it in that worker).
"""

import contextlib
import os
import time

import pybreaker
from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI()
payments = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=600, name="payments")
# PREFORK_EXTRA_BREAKERS=n: n more breakers (never called), for health at the size of a large service.
extra = [
    pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60, name=f"extra-{i}")
    for i in range(int(os.environ.get("PREFORK_EXTRA_BREAKERS", "0")))
]


class DependencyDown(Exception):
    """The fake dependency failed."""


def _down() -> None:
    raise DependencyDown("down")


@app.get("/block")
async def block() -> dict[str, bool]:
    time.sleep(0.3)  # deliberately blocking: this worker accepts nothing else meanwhile
    return {"ok": True}


@app.get("/fail")
async def fail() -> JSONResponse:
    time.sleep(0.02)  # blocking, so concurrent calls land on several workers
    return JSONResponse({"pid": os.getpid()}, status_code=500)


@app.get("/dependency")
async def dependency() -> JSONResponse:
    time.sleep(0.2)
    with contextlib.suppress(DependencyDown, pybreaker.CircuitBreakerError):
        payments.call(_down)
    return JSONResponse({"pid": os.getpid()}, status_code=502)
