"""Test app for the stuck-operations endpoints: a SQLite jobs table with a stuck-job detector, and an
endpoint that starts an in-process operation which stays in flight until released.

Run under opentelemetry-instrument; OPS_APP_DB names the SQLite file (the test reads it directly).
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from fastapi import FastAPI

from otel_reliability import register_stuck_detector, track_operation

engine = sa.create_engine(f"sqlite:///{os.environ['OPS_APP_DB']}")
jobs = sa.Table(
    "jobs",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),  # naive UTC
)
jobs.create(engine, checkfirst=True)
_now = datetime.now(timezone.utc).replace(tzinfo=None)
with engine.begin() as conn:
    conn.execute(jobs.delete())
    conn.execute(
        jobs.insert(),
        [
            {"id": 1, "status": "processing", "updated_at": _now - timedelta(hours=3)},
            {"id": 2, "status": "processing", "updated_at": _now - timedelta(hours=2)},
            # Stamped in the future so that it stays young for the whole test despite the 1 s threshold.
            {"id": 3, "status": "processing", "updated_at": _now + timedelta(hours=1)},
            {"id": 4, "status": "done", "updated_at": _now - timedelta(hours=3)},
        ],
    )

register_stuck_detector(
    "episode-processing",
    bind=engine,
    table=jobs,
    status_column="status",
    in_progress_values=["processing"],
    timestamp_column="updated_at",
    error_value="error",
)

app = FastAPI()
_release = threading.Event()


@app.post("/ops/start")
def start(key: str) -> dict[str, str]:
    started = threading.Event()

    def run() -> None:
        with track_operation("render", key=key):
            started.set()
            _release.wait(60)

    threading.Thread(target=run, daemon=True).start()
    started.wait(5)
    return {"started": key}


@app.post("/ops/release")
def release() -> dict[str, bool]:
    _release.set()
    return {"released": True}
