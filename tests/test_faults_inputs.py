"""Bad input as regression tests (short versions of benchmarks/faults.py): random paths and query strings add no
metric series; hypothesis-generated health and admin requests never get a 5xx. (Bad settings: tests/test_config.py
starts every bad value under opentelemetry-instrument; ``make faults`` runs them all at once as a row.)"""

from __future__ import annotations

from pathlib import Path

from benchmarks import faults


def test_random_path_flood_adds_no_series(tmp_path: Path) -> None:
    row = faults.path_flood(tmp_path, requests=500)
    assert row.ok, row.cells()


def test_fuzzed_health_and_admin_requests_get_no_5xx(tmp_path: Path) -> None:
    row = faults.fuzz_health(tmp_path, examples=100)
    assert row.ok, row.cells()
