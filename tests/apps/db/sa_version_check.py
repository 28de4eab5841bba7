"""Self-contained pool-metrics check, run by tests/test_sqlalchemy_versions.py in a venv with another SQLAlchemy.

Saturation on SQLite: pool 2 + overflow 1 held by 3 connections, a 4th caller waits then times out. Prints one
JSON line with what the Readings saw; exits non-zero on a mismatch.
"""

import json
import sys
import tempfile
import threading
import time

import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from sqlalchemy import pool as sa_pool

from otel_reliability.instrumentation.pool import POOL_NAME, STATE, PoolInstrumentor
from otel_reliability.readings import Readings

reader = Readings(background=False)
PoolInstrumentor().instrument(meter_provider=MeterProvider(metric_readers=[reader]))
path = tempfile.mkdtemp() + "/check.sqlite"
engine = sa.create_engine(f"sqlite:///{path}", poolclass=sa_pool.QueuePool, pool_size=2, max_overflow=1, pool_timeout=1)
name = f"sqlite:{path}"
where = {POOL_NAME: name}
held = [engine.connect() for _ in range(3)]
errors = []


def fourth() -> None:
    try:
        engine.connect()
    except sa.exc.TimeoutError as exc:
        errors.append(exc)


waiter = threading.Thread(target=fourth)
waiter.start()
time.sleep(0.3)
during = reader.snapshot(max_age=0)
waiter.join()
after = reader.snapshot(max_age=0)
result = {
    "sqlalchemy": sa.__version__,
    "used": during.value("db.client.connection.count", {**where, STATE: "used"}),
    "max": during.value("db.client.connection.max", where),
    "pending": during.value("db.client.connection.pending_requests", where),
    "timeouts": after.total("db.client.connection.timeouts", where),
    "timed_out": len(errors),
}
print(json.dumps(result))
ok = result["used"] == 3 and result["max"] == 3 and result["pending"] == 1 and result["timeouts"] == 1
sys.exit(0 if ok and errors else 1)
