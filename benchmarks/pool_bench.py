"""Cost of the pool instrumentor on a checkout-execute-checkin loop, instrumented vs not, in one run.

    python benchmarks/pool_bench.py [--loops 5000] [--rounds 5] [--postgres-url URL | --no-postgres]

Without ``--postgres-url`` a private PostgreSQL cluster is started (tests/support.py) and stopped after.
Per round, the uninstrumented and the instrumented loop run back to back on one engine each (timeit); the
result is the median over rounds of the best-of-3 per-iteration time and the median of the per-round
ratios (so machine drift hits both).
The instrumented variant has a MeterProvider with one in-process reader, as under opentelemetry-instrument.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from sqlalchemy import pool as sa_pool  # noqa: E402

from otel_reliability.instrumentation.pool import PoolInstrumentor  # noqa: E402
from otel_reliability.readings import Readings  # noqa: E402


def loop_once(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1").scalar()


def per_iteration(url: str, loops: int, instrumented: bool) -> float:
    provider = None
    if instrumented:
        provider = MeterProvider(metric_readers=[Readings(background=False)])
        PoolInstrumentor().instrument(meter_provider=provider)
    try:
        engine = sa.create_engine(url, poolclass=sa_pool.QueuePool, pool_size=2)
        loop_once(engine)  # open the connection outside the timing
        # the best of 3: on a shared machine the minimum is the least disturbed measurement
        seconds = min(timeit.repeat(lambda: loop_once(engine), number=loops, repeat=3))
        engine.dispose()
        return seconds / loops
    finally:
        if instrumented:
            PoolInstrumentor().uninstrument()
            assert provider is not None
            provider.shutdown()


def measure(label: str, url: str, loops: int, rounds: int) -> dict[str, Any]:
    plain, instr, ratios = [], [], []
    for _ in range(rounds):
        a = per_iteration(url, loops, instrumented=False)
        b = per_iteration(url, loops, instrumented=True)
        plain.append(a)
        instr.append(b)
        ratios.append(b / a)
    row = {
        "target": label,
        "plain_us": statistics.median(plain) * 1e6,
        "instrumented_us": statistics.median(instr) * 1e6,
        "overhead_pct": (statistics.median(ratios) - 1) * 100,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }
    print(
        f"{label:<22} plain {row['plain_us']:8.1f} us  instrumented {row['instrumented_us']:8.1f} us  "
        f"overhead {row['overhead_pct']:+5.1f}% (ratios {row['ratio_min']:.3f}..{row['ratio_max']:.3f}, "
        f"{rounds} rounds x {loops} loops)"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loops", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres-url")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    print(f"SQLAlchemy {sa.__version__}, Python {sys.version.split()[0]}")
    measure("sqlite :memory:", "sqlite://", args.loops, args.rounds)
    if args.no_postgres:
        return
    if args.postgres_url:
        measure("postgresql (psycopg)", args.postgres_url, args.loops // 5, args.rounds)
        return
    from tests.support import start_postgres

    pg = start_postgres()
    try:
        measure("postgresql (psycopg)", pg.url("psycopg"), args.loops // 5, args.rounds)
    finally:
        pg.stop("immediate")


if __name__ == "__main__":
    main()
