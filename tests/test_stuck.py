"""Database-backed stuck detectors on SQLite and real PostgreSQL: the counts, the cached gauges, and a
cleanup that changes exactly the rows it reports (and nothing with dry_run)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider

from otel_reliability import config
from otel_reliability.health.model import CheckContext
from otel_reliability.health.views import operations as view
from otel_reliability.instrumentation import stuck
from otel_reliability.instrumentation.operations import OperationsInstrumentor, track_operation
from otel_reliability.readings import Readings
from tests.support import Postgres, wait_until

IN_PROGRESS = ["processing", "transcribing"]
_names = itertools.count()


@dataclass
class Case:
    engine: sa.Engine
    table: sa.Table
    aware: bool

    def ts(self, age: timedelta) -> datetime:
        value = datetime.now(timezone.utc) - age
        return value if self.aware else value.replace(tzinfo=None)

    def state(self) -> dict[int, str]:
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(self.table.c.id, self.table.c.status)).all())  # type: ignore[arg-type]

    def seed(self) -> None:
        rows = [
            (1, "processing", timedelta(hours=3)),  # stuck
            (2, "processing", timedelta(minutes=1)),  # in progress, young
            (3, "done", timedelta(hours=3)),  # old but finished
            (4, "transcribing", timedelta(hours=5)),  # stuck, the oldest
            (5, "error", timedelta(hours=5)),  # already marked
            (6, "queued", timedelta(hours=9)),  # not an in-progress status
        ]
        with self.engine.begin() as conn:
            conn.execute(
                self.table.insert(), [{"id": i, "status": s, "started_at": self.ts(age)} for i, s, age in rows]
            )

    def register(self, table: Any = None, **kw: Any) -> stuck.StuckDetector:
        defaults: dict[str, Any] = {"threshold": 3600.0, "interval": 3600.0}
        return stuck.register_stuck_detector(
            self.table.name,
            bind=self.engine,
            table=self.table if table is None else table,
            status_column="status",
            in_progress_values=IN_PROGRESS,
            timestamp_column="started_at",
            error_value="error",
            **{**defaults, **kw},
        )


def _make_table(engine: sa.Engine, aware: bool) -> sa.Table:
    table = sa.Table(
        f"jobs_{next(_names)}_{'tz' if aware else 'naive'}",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=aware), nullable=False),
    )
    table.create(engine)
    return table


@pytest.fixture
def make_case(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[str, bool], Case]]:
    created: list[Case] = []

    def make(backend: str, aware: bool) -> Case:
        if backend == "sqlite":
            engine = sa.create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
        else:
            pg: Postgres = request.getfixturevalue("postgres")
            # A session time zone far from UTC: naive/aware mistakes would shift ages by hours.
            engine = sa.create_engine(pg.url("psycopg"), connect_args={"options": "-c timezone=Pacific/Kiritimati"})
        case = Case(engine, _make_table(engine, aware), aware)
        case.seed()
        created.append(case)
        return case

    yield make
    for case in created:
        stuck.unregister_stuck_detector(case.table.name)
        case.engine.dispose()


BACKENDS = [
    pytest.param("sqlite", False, id="sqlite-naive"),
    pytest.param("sqlite", True, id="sqlite-aware"),
    pytest.param("postgresql", False, id="postgresql-timestamp"),
    pytest.param("postgresql", True, id="postgresql-timestamptz"),
]


@pytest.mark.parametrize(("backend", "aware"), BACKENDS)
def test_check_counts_in_progress_rows_older_than_the_threshold(
    make_case: Callable[[str, bool], Case], backend: str, aware: bool
) -> None:
    case = make_case(backend, aware)
    reading = case.register().check()
    assert (reading.in_progress, reading.stuck) == (3, 2)
    assert reading.oldest_age == pytest.approx(5 * 3600, abs=60)
    assert [row.key for row in reading.sample] == [4, 1]  # oldest first
    assert reading.sample[1].age_seconds == pytest.approx(3 * 3600, abs=60)


@pytest.mark.parametrize(("backend", "aware"), BACKENDS)
def test_cleanup_changes_exactly_the_rows_it_reports(
    make_case: Callable[[str, bool], Case], backend: str, aware: bool
) -> None:
    case = make_case(backend, aware)
    detector = case.register()
    before = case.state()

    preview = detector.cleanup(dry_run=True)
    assert sorted(r.key for r in preview) == [1, 4]
    assert case.state() == before  # dry run changes nothing

    marked = detector.cleanup(dry_run=False)
    assert sorted(r.key for r in marked) == [1, 4]
    after = case.state()
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {1, 4}
    assert after[1] == after[4] == "error"

    assert detector.cleanup(dry_run=False) == []  # nothing left to mark
    assert detector.last is not None and detector.last.stuck == 0  # recounted right after the cleanup


@pytest.mark.parametrize(("backend", "aware"), [BACKENDS[0], BACKENDS[3]])
def test_cleanup_rechecks_rows_that_finished_after_the_preview(
    make_case: Callable[[str, bool], Case], backend: str, aware: bool
) -> None:
    case = make_case(backend, aware)
    detector = case.register()
    assert sorted(r.key for r in detector.cleanup(dry_run=True)) == [1, 4]
    with case.engine.begin() as conn:  # row 1's job finishes between the preview and the cleanup
        conn.execute(case.table.update().where(case.table.c.id == 1).values(status="done"))
    assert [r.key for r in detector.cleanup(dry_run=False)] == [4]
    assert case.state()[1] == "done"


def test_cleanup_without_returning_selects_then_updates_in_one_transaction(
    make_case: Callable[[str, bool], Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    case = make_case("sqlite", False)
    monkeypatch.setattr(case.engine.dialect, "update_returning", False)
    detector = case.register()
    before = case.state()
    assert sorted(r.key for r in detector.cleanup(dry_run=False)) == [1, 4]
    after = case.state()
    assert {k for k in before if before[k] != after[k]} == {1, 4}


def test_table_given_by_name_is_reflected_on_postgresql(make_case: Callable[[str, bool], Case]) -> None:
    case = make_case("postgresql", True)
    detector = case.register(table=case.table.name)
    assert detector.check().stuck == 2
    assert sorted(r.key for r in detector.cleanup(dry_run=False)) == [1, 4]


def test_background_thread_refreshes_the_cache(make_case: Callable[[str, bool], Case]) -> None:
    case = make_case("sqlite", False)
    detector = case.register(interval=0.05)
    wait_until(lambda: detector.last is not None and detector.last.stuck == 2, timeout=5, what="first check")
    with case.engine.begin() as conn:
        conn.execute(case.table.insert().values(id=7, status="processing", started_at=case.ts(timedelta(days=1))))
    wait_until(lambda: detector.last is not None and detector.last.stuck == 3, timeout=5, what="recount")


def test_stuck_rows_are_the_operation_stuck_gauge_and_the_admin_count(
    make_case: Callable[[str, bool], Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "_current", config.load({}))
    readings = Readings(background=False)
    instrumentor = stuck.StuckInstrumentor()  # its own entry point: reliability_operations is not needed
    instrumentor.instrument(meter_provider=MeterProvider(metric_readers=[readings]))
    try:
        case = make_case("postgresql", False)
        name = case.table.name
        detector = case.register()
        detector.check()
        snap = readings.snapshot(max_age=0.0)
        assert snap.value("operation.stuck", {"operation.name": name}) == 2
        assert snap.value("operation.in_flight", {"operation.name": name}) == 3
        assert snap.value("operation.oldest_age", {"operation.name": name}) == pytest.approx(5 * 3600, abs=60)

        ctx = CheckContext(readings=readings, settings=config.settings())
        body = view.stuck_operations(ctx, {})
        assert body["stuck_count"] == readings.snapshot(max_age=0.0).total("operation.stuck") == 2
        assert [(r["key"], r["source"]) for r in body["stuck_operations"]] == [(4, "database"), (1, "database")]

        dry = view.cleanup(ctx, {"dry_run": "true"})
        assert (dry["dry_run"], dry["marked_count"]) == (True, 2)
        assert readings.snapshot(max_age=0.0).value("operation.stuck", {"operation.name": name}) == 2
        done = view.cleanup(ctx, {})
        assert (done["dry_run"], sorted(r["key"] for r in done["marked"])) == (False, [1, 4])
        assert readings.snapshot(max_age=0.0).value("operation.stuck", {"operation.name": name}) == 0
    finally:
        instrumentor.uninstrument()


@pytest.mark.parametrize("enabled", [("stuck",), ("operations",), ("stuck", "operations")])
def test_each_entry_point_publishes_its_own_rows_into_the_shared_gauges(
    make_case: Callable[[str, bool], Case], enabled: tuple[str, ...]
) -> None:
    """reliability_stuck and reliability_operations each add their rows to the same operation.* series; one
    disabled leaves the other's (a detector and an in-process operation of the same name are added up)."""
    readings = Readings(background=False)
    provider = MeterProvider(metric_readers=[readings])
    instrumentors = {"stuck": stuck.StuckInstrumentor(), "operations": OperationsInstrumentor()}
    for name in enabled:
        instrumentors[name].instrument(meter_provider=provider, settings=config.load({}))
    try:
        case = make_case("sqlite", False)
        name = case.table.name
        case.register().check()  # 3 rows in progress, 2 of them stuck
        with track_operation(name, threshold=0.0), track_operation("t-in-process-only"):
            snap = readings.snapshot(max_age=0.0)
            in_flight = snap.value("operation.in_flight", {"operation.name": name})
            stuck_count = snap.value("operation.stuck", {"operation.name": name})
            in_process_only = snap.value("operation.in_flight", {"operation.name": "t-in-process-only"})
    finally:
        for instrumentor in instrumentors.values():
            instrumentor.uninstrument()
    expected = {
        ("stuck",): (3, 2, None),
        ("operations",): (1, 1, 1),
        ("stuck", "operations"): (4, 3, 1),
    }[enabled]
    assert (in_flight, stuck_count, in_process_only) == expected


def test_registration_rejects_an_async_engine_and_a_non_datetime_column() -> None:
    from types import SimpleNamespace

    # Shaped like sqlalchemy's AsyncEngine (which needs greenlet, absent from this environment).
    async_engine = SimpleNamespace(sync_engine=sa.create_engine("sqlite://"))
    table = sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column("status", sa.String),
                     sa.Column("started_at", sa.Integer))  # fmt: skip
    common: dict[str, Any] = {"status_column": "status", "in_progress_values": ["processing"],
                              "timestamp_column": "started_at", "error_value": "error"}  # fmt: skip
    with pytest.raises(TypeError, match="synchronous Engine"):
        stuck.register_stuck_detector("x", bind=async_engine, table=table, **common)
    with pytest.raises(TypeError, match="DateTime"):
        stuck.register_stuck_detector("x", bind=sa.create_engine("sqlite://"), table=table, **common)
    assert "x" not in {d.name for d in stuck.detectors()}
