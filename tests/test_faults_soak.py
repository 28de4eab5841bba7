"""Short soak (20 s of steady mixed load; 10 minutes in ``make faults``): RSS, threads and open files flat."""

from __future__ import annotations

from pathlib import Path

from benchmarks import faults
from tests.support import Postgres


def test_soak_keeps_rss_threads_and_open_files_flat(postgres: Postgres, tmp_path: Path) -> None:
    row = faults.soak(postgres, tmp_path, seconds=20.0, sample_every=1.0)
    assert row.ok, row.cells()
