"""The crash-safe request histogram (otel_reliability/crash_safe.py): same counts, sum and buckets as the SDK's
histogram for the same measurements, readable by another process, inert in a single process and in a fork."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from otel_reliability import crash_safe

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
VALUES = (0.0, 0.005, 0.0050001, 0.3, 1, 10, 11.5, 0.02, 0.02)


def test_the_table_holds_what_the_sdk_histogram_holds(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    histogram = (
        MeterProvider(metric_readers=[reader])
        .get_meter("t")
        .create_histogram("h", explicit_bucket_boundaries_advisory=BOUNDS)
    )
    table = crash_safe.Table(tmp_path / "w.h.tally", name="h", bounds=BOUNDS, meta={"unit": "s"})
    series = ({"route": "/a", "status": 500}, {"route": "/b", "status": 200})
    for i, value in enumerate(VALUES):
        attributes = series[i % 2]
        slot = table.slot(attributes)
        assert slot is not None
        table.add(slot, value)
        histogram.record(value, attributes)
    data = reader.get_metrics_data()
    assert data is not None
    sdk = {
        tuple(sorted(p.attributes.items())): (p.count, p.sum, list(p.bucket_counts))
        for p in data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
        if isinstance(p, HistogramDataPoint)
    }
    header, read = crash_safe.read(table.path)
    assert header["name"] == "h" and header["bounds"] == list(BOUNDS) and header["unit"] == "s"
    assert {tuple(sorted(a.items())): (sum(b), s, b) for a, s, b in read} == sdk


def test_a_full_table_gives_no_slot_and_a_single_process_no_table(tmp_path: Path) -> None:
    table = crash_safe.Table(tmp_path / "w.h.tally", name="h", bounds=BOUNDS, meta={}, capacity=2)
    assert [table.slot({"i": i}) for i in range(3)] == [0, len(BOUNDS) + 2, None]
    assert table.slot({"long": "x" * crash_safe.SLOT_TEXT}) is None
    assert crash_safe.histogram("h", BOUNDS, {}) is None  # no prefork worker set-up: nothing on the request path


def test_after_a_fork_the_child_writes_to_private_memory(tmp_path: Path) -> None:
    """A worker's fork (a subprocess it starts) is not the worker: the at-fork hook detaches its tables, whose
    slots its middleware may still hold. The hook is called directly: forking a test process with threads can
    deadlock the child in unrelated at-fork handlers."""
    crash_safe.open_in(tmp_path, "w-1-x")
    try:
        table = crash_safe.histogram("h", BOUNDS, {})
        assert table is not None
        slot = table.slot({"a": 1})
        assert slot is not None
        table.add(slot, 0.2)
        crash_safe._forked()  # what os.register_at_fork runs in the child
        table.add(slot, 0.2)
        assert crash_safe.histogram("h", BOUNDS, {}) is None
        assert [sum(b) for _, _, b in crash_safe.read(table.path)[1]] == [1]
    finally:
        crash_safe.open_in(None)


def test_not_a_table(tmp_path: Path) -> None:
    (tmp_path / "x.tally").write_bytes(b"\0" * crash_safe.HEADER)
    with pytest.raises(ValueError, match="not a tally file"):
        crash_safe.read(tmp_path / "x.tally")
