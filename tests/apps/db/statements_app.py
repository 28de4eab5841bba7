"""A FastAPI app whose routes run SQL, under opentelemetry-instrument by tests/test_statements_app.py.

No tracing code: statements are traced by the ``reliability_statements`` entry point. ``DATABASE_URL`` picks the
database (SQLite or PostgreSQL), ``ASYNC_DATABASE_URL`` the async engine's. A stuck detector on the same table
runs its background query every second: it must never show up as a statement.
"""

import os

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import create_async_engine

from otel_reliability import register_stuck_detector, run_in_transaction

engine = sa.create_engine(os.environ["DATABASE_URL"], pool_size=2, max_overflow=0)
async_engine = create_async_engine(os.environ["ASYNC_DATABASE_URL"])
metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100)),
    sa.Column("status", sa.String(20)),
    sa.Column("updated_at", sa.DateTime),
)
metadata.create_all(engine)
register_stuck_detector(
    "items", bind=engine, table=items, status_column="status", in_progress_values=["running"],
    timestamp_column="updated_at", error_value="error", interval=1,
)  # fmt: skip
app = FastAPI()


@app.get("/items/{item_id}")
def get_item(item_id: int) -> dict[str, object]:
    with engine.connect() as conn:
        # A value written into the SQL text (what a careless app does): it must not reach the span.
        conn.execute(sa.text("SELECT 4242, 'secret-literal'"))
        row = conn.execute(sa.select(items.c.name).where(items.c.id == item_id)).first()
    return {"name": row[0] if row else None}


@app.post("/items/{item_id}")
def put_item(item_id: int) -> dict[str, int]:
    def work(session: object) -> int:
        session.execute(sa.delete(items).where(items.c.id == item_id))  # type: ignore[attr-defined]
        session.execute(sa.insert(items).values(id=item_id, name="n", status="done"))  # type: ignore[attr-defined]
        return item_id

    return {"id": run_in_transaction(engine, work)}


@app.get("/async/{item_id}")
async def get_item_async(item_id: int) -> dict[str, object]:
    async with async_engine.connect() as conn:
        row = (await conn.execute(sa.select(items.c.name).where(items.c.id == item_id))).first()
    return {"name": row[0] if row else None}


@app.get("/fail")
def fail() -> JSONResponse:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table WHERE id = 77"))
    except sa.exc.DBAPIError as exc:
        return JSONResponse({"error": type(exc).__name__}, status_code=500)
    return JSONResponse({})
