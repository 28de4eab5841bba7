"""Short versions of the PostgreSQL faults of benchmarks/faults.py (the full ones run in ``make faults``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import faults
from tests.support import Postgres, start_postgres


@pytest.fixture(scope="module")
def stoppable_postgres() -> Iterator[Postgres]:
    """A cluster of its own: this fault stops it, and the session's cluster serves other tests."""
    pg = start_postgres()
    try:
        yield pg
    finally:
        pg.stop("immediate")


def test_connections_killed_mid_transaction_lose_nothing(postgres: Postgres, tmp_path: Path) -> None:
    row = faults.pg_terminate(postgres, tmp_path, seconds=3.0)
    assert row.ok, row.cells()
    assert row.failed == 0 and row.lost.startswith("0 updates"), row.cells()


def test_postgres_stopped_health_stays_json_says_so_and_recovers(stoppable_postgres: Postgres, tmp_path: Path) -> None:
    """The bars of issue 13: health answers JSON (never 500, never > 3 s) throughout, is not healthy while
    requests fail, and is healthy again within 5 s of the database's return. The second bar needs pool health
    to degrade on connection errors (issue 11)."""
    row = faults.pg_outage(stoppable_postgres, tmp_path, outage=2.0, before=2.0, after=6.0)
    assert row.ok, row.cells()
