"""A FastAPI app with one SQLAlchemy pool (2 + overflow 1), run under opentelemetry-instrument by the tests.

No otel_reliability code: the pool is instrumented by the ``reliability_pool`` entry point.
"""

import os

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import JSONResponse

engine = sa.create_engine(
    os.environ["DATABASE_URL"], pool_size=2, max_overflow=1, pool_timeout=float(os.environ.get("POOL_TIMEOUT", "3"))
)
app = FastAPI()
held: list[sa.Connection] = []


@app.post("/hold")
def hold(n: int) -> dict[str, int]:
    for _ in range(n):
        conn = engine.connect()
        conn.execute(sa.text("SELECT 1"))
        held.append(conn)
    return {"held": len(held)}


@app.post("/release")
def release() -> dict[str, int]:
    while held:
        held.pop().close()
    return {"held": 0}


@app.get("/query")
def query() -> JSONResponse:
    try:
        with engine.connect() as conn:
            return JSONResponse({"value": conn.execute(sa.text("SELECT 1")).scalar_one()})
    except sa.exc.TimeoutError:
        return JSONResponse({"error": "pool timeout"}, status_code=503)
    except sa.exc.DBAPIError as exc:
        return JSONResponse({"error": type(exc).__name__}, status_code=503)
