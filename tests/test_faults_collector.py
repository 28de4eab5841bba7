"""Short version of the collector outage of benchmarks/faults.py: the real collector (``make collector``)
stopped 3 s under load and started again on the same ports; the app exports every second by OTLP/gRPC."""

from __future__ import annotations

from pathlib import Path

from benchmarks import faults


def test_collector_down_then_back_loses_no_count_and_logs_one_line_each_way(tmp_path: Path) -> None:
    row = faults.collector_outage(tmp_path, down=3.0, before=2.0, after=2.0, export_timeout=1.0)
    assert row.ok, row.cells()
    assert row.lost.startswith("0 counts") and "upstream 0" in row.log_lines, row.cells()
