"""temp_file: removed on success and on error, counted while it exists, a failed removal counted and logged."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider

from otel_reliability import temp_file
from otel_reliability.instrumentation.tempfiles import TempFilesInstrumentor
from otel_reliability.readings import Readings


@pytest.fixture
def readings() -> Iterator[Readings]:
    reader = Readings(background=False)
    instrumentor = TempFilesInstrumentor()
    instrumentor.instrument(meter_provider=MeterProvider(metric_readers=[reader]))
    try:
        yield reader
    finally:
        instrumentor.uninstrument()


def _value(readings: Readings, name: str) -> float | None:
    return readings.snapshot(max_age=0.0).value(name)


def test_file_exists_inside_and_is_removed_after_success(tmp_path: Path, readings: Readings) -> None:
    with temp_file(".mp3", dir=tmp_path) as path:
        assert path.exists() and path.suffix == ".mp3" and path.parent == tmp_path
        path.write_bytes(b"x" * 1234)
        assert _value(readings, "temp_file.open") == 1
        assert _value(readings, "temp_file.size") == 1234
        with temp_file(dir=tmp_path) as second:
            second.write_bytes(b"y" * 10)
            assert _value(readings, "temp_file.open") == 2
            assert _value(readings, "temp_file.size") == 1244
    assert not path.exists() and not second.exists()
    assert _value(readings, "temp_file.open") == 0
    assert _value(readings, "temp_file.size") == 0
    assert list(tmp_path.iterdir()) == []


def test_file_is_removed_after_an_exception(tmp_path: Path, readings: Readings) -> None:
    with pytest.raises(RuntimeError, match="processing failed"), temp_file(dir=tmp_path) as path:
        path.write_text("partial output")
        raise RuntimeError("processing failed")
    assert not path.exists()
    assert _value(readings, "temp_file.open") == 0
    assert _value(readings, "temp_file.leaked") in (None, 0)


def test_file_moved_away_by_the_caller_is_not_a_leak(
    tmp_path: Path, readings: Readings, caplog: pytest.LogCaptureFixture
) -> None:
    with temp_file(dir=tmp_path) as path:
        path.rename(tmp_path / "kept.bin")
    assert (tmp_path / "kept.bin").exists()
    assert _value(readings, "temp_file.leaked") in (None, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_failed_removal_is_counted_and_logged_once_with_the_path(
    tmp_path: Path, readings: Readings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="otel_reliability")
    with temp_file(dir=tmp_path) as path:
        # Replace the file by a non-empty directory: unlink fails (EISDIR) even for root.
        path.unlink()
        path.mkdir()
        (path / "inner").write_text("x")
    try:
        assert path.is_dir()  # left on disk, as reported
        assert _value(readings, "temp_file.leaked") == 1
        assert _value(readings, "temp_file.open") == 0  # no longer ours to hold
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert str(path) in warnings[0].getMessage()
        # Nothing retries behind the caller's back: a later collection logs nothing more.
        _value(readings, "temp_file.open")
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    finally:
        shutil.rmtree(path)


def test_removal_error_never_replaces_the_callers_exception(tmp_path: Path, readings: Readings) -> None:
    with pytest.raises(ValueError, match="original"), temp_file(dir=tmp_path) as path:
        path.unlink()
        path.mkdir()
        (path / "inner").write_text("x")
        raise ValueError("original")
    assert _value(readings, "temp_file.leaked") == 1
    shutil.rmtree(path)
