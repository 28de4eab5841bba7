"""Short version of the flapping dependency of benchmarks/faults.py: behind pybreaker and circuitbreaker, the
transitions exported equal those the library made (its own listener's count), and health agrees with a scrape."""

from __future__ import annotations

from pathlib import Path

from benchmarks import faults


def test_flapping_dependency_transitions_match_the_library(tmp_path: Path) -> None:
    row = faults.flapping(tmp_path, seconds=4.0, period=0.5)
    assert row.ok, row.cells()
