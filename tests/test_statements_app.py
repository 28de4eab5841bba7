"""Statements of a real app under opentelemetry-instrument, on real PostgreSQL and SQLite: spans over OTLP
(parented, attributed, without literal values, none for our own probes), db.client.operation.duration over
OTLP and on :9464, and upstream's SQLAlchemy instrumentation installed beside us staying silent.

The collector path (same Prometheus names as :9464) is proved by test_stack_e2e.py with the example app.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    ROOT,
    AppProcess,
    OtlpReceiver,
    http,
    require,
    scrape,
    series_value,
    upstream_instrumentation_dir,
    wait_until,
)

StartApp = Callable[..., AppProcess]
APP_DIR = ROOT / "tests" / "apps" / "db"
STATEMENTS_SCOPE = "otel_reliability.statements"


def _urls(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, dict[str, Any]]:
    if kind == "sqlite":
        path = tmp_path / "app.sqlite"
        return f"sqlite:///{path}", f"sqlite+aiosqlite:///{path}", {"db.system.name": "sqlite"}
    pg = request.getfixturevalue("postgres")
    database = f"statements_{uuid.uuid4().hex[:8]}"
    pg.psql(f"CREATE DATABASE {database} OWNER {pg.user}")
    base = pg.url("psycopg").rsplit("/", 1)[0]
    expected = {
        "db.system.name": "postgresql",
        "db.namespace": database,
        "server.address": "127.0.0.1",
        "server.port": pg.port,
    }
    return f"{base}/{database}", f"{base.replace('+psycopg', '+asyncpg')}/{database}", expected


def _spans(receiver: OtlpReceiver) -> list[dict[str, Any]]:
    out = []
    for request in list(receiver.traces):
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in s.attributes}
                    out.append({
                        "scope": ss.scope.name, "name": s.name, "id": s.span_id, "parent": s.parent_span_id,
                        "kind": s.kind, "attrs": attrs, "status": s.status.code, "events": list(s.events),
                    })  # fmt: skip
    return out


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_statement_spans_and_duration_over_otlp(
    kind: str, app_factory: StartApp, receiver: OtlpReceiver, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url, async_url, expected = _urls(kind, request, tmp_path)
    app = app_factory(
        "statements_app:app",
        app_dir=APP_DIR,
        env={
            "DATABASE_URL": url,
            "ASYNC_DATABASE_URL": async_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_RELIABILITY_STATEMENT_TIMEOUT_INTERVAL": "1",
        },
    )
    assert http("POST", app.url + "/items/5")[0] == 200
    for path in ("/items/5", "/async/5", "/fail"):
        http("GET", app.url + path)
    # The stuck detector (every second) and, on PostgreSQL, the statement_timeout sampler have run meanwhile.
    wait_until(
        lambda: any(a.get("operation.name") == "items" for _, a in receiver.metric_points("operation.stuck")),
        what="the stuck detector's first reading",
    )
    servers = wait_until(
        lambda: (found := {s["name"]: s for s in _spans(receiver) if s["kind"] == 2}) and len(found) >= 4 and found,
        what="four request spans",
    )
    spans = _spans(receiver)
    ours = [s for s in spans if s["scope"] == STATEMENTS_SCOPE]

    def children(parent: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in ours if s["parent"] == parent["id"]}

    get = children(servers["GET /items/{item_id}"])
    assert set(get) == {"SELECT", "SELECT items"}
    literal = get["SELECT"]
    assert literal["kind"] == 3  # CLIENT
    assert literal["attrs"]["db.query.text"] == "SELECT ?, ?"
    assert literal["attrs"]["db.operation.name"] == "SELECT"
    assert {k: literal["attrs"].get(k) for k in expected} == expected
    assert "db.client.connection.wait_time" in literal["attrs"]  # first statement of the checkout
    assert get["SELECT items"]["attrs"]["db.collection.name"] == "items"

    (transaction,) = [s for s in spans if s["name"] == "db.transaction"]
    assert transaction["parent"] == servers["POST /items/{item_id}"]["id"]
    assert set(children(transaction)) == {"DELETE items", "INSERT items"}

    assert set(children(servers["GET /async/{item_id}"])) == {"SELECT items"}

    (failed,) = children(servers["GET /fail"]).values()
    assert failed["name"] == "SELECT no_such_table" and failed["status"] == 2  # ERROR
    assert failed["attrs"]["error.type"] == ("42P01" if kind == "postgresql" else "sqlite3.OperationalError")

    everything = repr([s["attrs"] for s in spans]) + repr([s["events"] for s in spans])
    assert "4242" not in everything and "secret-literal" not in everything and "= 77" not in everything
    probes = [s for s in ours if re.search(r"coalesce|statement_timeout", s["attrs"].get("db.query.text", ""), re.I)]
    assert probes == []  # the stuck detector's count and the statement_timeout read are ours, not the app's

    # The duration's attributes are the span's: on PostgreSQL db.namespace and server.address/port too.
    select = tuple(sorted({**expected, "db.collection.name": "items", "db.operation.name": "SELECT"}.items()))

    def labels() -> set[tuple[tuple[str, Any], ...]]:
        points = [a for _, a in receiver.metric_points("db.client.operation.duration") if a["_value"] > 0]
        return {tuple(sorted((k, v) for k, v in a.items() if k != "_value")) for a in points}

    def failed_counted() -> bool:
        return any(dict(label).get("error.type") == failed["attrs"]["error.type"] for label in labels())

    # An export made before /fail ran may arrive first: wait for one with both.
    wait_until(lambda: select in labels() and failed_counted(), what="SELECT items and the failure over OTLP")
    allowed = {"db.system.name", "db.operation.name", "db.collection.name", "error.type", "db.response.status_code"}
    allowed |= {"db.namespace", "server.address", "server.port"}  # bounded: one per pool
    assert all({k for k, _ in label} <= allowed for label in labels())


def test_prometheus_names_and_upstream_sqlalchemy_instrumentation_beside_us(
    app_factory: StartApp, tmp_path: Path
) -> None:
    try:
        upstream = upstream_instrumentation_dir("opentelemetry-instrumentation-sqlalchemy")
    except RuntimeError as exc:
        require(False, f"opentelemetry-instrumentation-sqlalchemy from PyPI ({exc})")
    path = tmp_path / "app.sqlite"
    app = app_factory(
        "statements_app:app",
        app_dir=APP_DIR,
        env={
            "DATABASE_URL": f"sqlite:///{path}",
            "ASYNC_DATABASE_URL": f"sqlite+aiosqlite:///{path}",
            "PYTHONPATH": str(upstream),  # as if the user had installed it (or opentelemetry-bootstrap had)
        },
    )
    for _ in range(2):
        http("GET", app.url + "/items/1")
    http("GET", app.url + "/fail")
    metrics = scrape(app.metrics_port)
    count = "db_client_operation_duration_seconds_count"
    select = {"db_system_name": "sqlite", "db_operation_name": "SELECT", "db_collection_name": "items"}
    assert series_value(metrics, count, **select) == 2
    failed = series_value(metrics, count, db_collection_name="no_such_table", error_type="sqlite3.OperationalError")
    assert failed == 1
    buckets = sorted(float(lab["le"]) for lab, _ in metrics["db_client_operation_duration_seconds_bucket"]
                     if all(lab.get(k) == v for k, v in select.items()))  # fmt: skip
    assert buckets == [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, float("inf")]
    assert not [n for n in metrics if n.startswith("db_client_connections_usage")]  # upstream's pool metric: off
    app.stop()
    log = app.log()
    assert "outside of that range" not in log and not re.search(r"WARNING|ERROR|Traceback", log), log
