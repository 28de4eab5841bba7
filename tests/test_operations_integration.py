"""The stuck-operations endpoints in a real app under opentelemetry-instrument: admin token only, counts equal
to what Prometheus scrapes, cleanup changing exactly the reported database rows."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, get_json, http, scrape, wait_until

pytestmark = pytest.mark.integration

ADMIN = "admin-token-123456"
HEALTH = "health-token-123456"
APP_DIR = ROOT / "tests" / "apps" / "operations"


def _statuses(db: Path) -> dict[int, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, status FROM jobs").fetchall())


def _post(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, _, body = http("POST", url, headers=headers)
    return status, json.loads(body)


def _prometheus_stuck(port: int) -> float:
    return sum(value for _, value in scrape(port).get("operation_stuck", []))


def test_stuck_operations_endpoints(app_factory: Any, tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    app = app_factory(
        "app:app",
        app_dir=APP_DIR,
        env={
            "OPS_APP_DB": str(db),
            "OTEL_RELIABILITY_ADMIN_TOKEN": ADMIN,
            "OTEL_RELIABILITY_HEALTH_TOKEN": HEALTH,
            "OTEL_RELIABILITY_STUCK_THRESHOLD": "1",
            "OTEL_RELIABILITY_STUCK_CHECK_INTERVAL": "1",
            # Only what this test is about (and independent of the other instrumentors' state).
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "reliability_breakers,reliability_pool,reliability_process",
        },
    )
    admin = f"{app.url}/api/admin/monitoring/stuck-operations"
    auth = {"Authorization": f"Bearer {ADMIN}"}

    # Refused without the admin token, with a wrong one and with the health token; nothing changes.
    before = _statuses(db)
    for headers in ({}, {"Authorization": "Bearer wrong-token-123"}, {"Authorization": f"Bearer {HEALTH}"}):
        assert get_json(admin, headers=headers)[0] == 401
        assert http("POST", f"{admin}/cleanup", headers=headers)[0] == 401
    assert _statuses(db) == before

    assert http("POST", f"{app.url}/ops/start?key=video-42")[0] == 200
    # The in-process operation passes the 1 s threshold; the detector has counted rows 1 and 2.
    body = wait_until(
        lambda: (b := get_json(admin, headers=auth)[1])["stuck_count"] == 3 and b,
        timeout=15,
        what="3 stuck operations",
    )
    assert body["action_required"] is True
    listed = {(r["name"], str(r["key"]), r["source"]) for r in body["stuck_operations"]}
    assert listed == {
        ("episode-processing", "1", "database"),
        ("episode-processing", "2", "database"),
        ("render", "video-42", "in_process"),
    }
    assert _prometheus_stuck(app.metrics_port) == 3  # the same number Prometheus scrapes
    status, health = get_json(f"{app.url}/api/health")
    assert health["checks"]["operations"]["status"] == "degraded"

    # Dry run: reports, changes nothing.
    status, dry = _post(f"{admin}/cleanup?dry_run=true", ADMIN)
    assert status == 200 and dry["dry_run"] is True
    assert sorted(r["key"] for r in dry["marked"]) == [1, 2] and dry["marked_count"] == 2
    assert _statuses(db) == before

    # A typo never turns a preview into a cleanup.
    assert _post(f"{admin}/cleanup?dryrun=true", ADMIN)[0] == 400
    assert _statuses(db) == before

    # Real cleanup: exactly the reported rows change; the in-process operation is reported, not killed.
    status, done = _post(f"{admin}/cleanup?dry_run=false", ADMIN)
    assert status == 200 and done["dry_run"] is False
    assert sorted(r["key"] for r in done["marked"]) == [1, 2]
    assert [(r["name"], r["key"]) for r in done["in_process_not_killable"]] == [("render", "video-42")]
    after = _statuses(db)
    assert {k for k in before if before[k] != after[k]} == {1, 2}
    assert after[1] == after[2] == "error"

    body = get_json(admin, headers=auth)[1]
    assert body["stuck_count"] == 1
    assert [r["source"] for r in body["stuck_operations"]] == ["in_process"]

    http("POST", f"{app.url}/ops/release")
    wait_until(lambda: get_json(admin, headers=auth)[1]["stuck_count"] == 0, timeout=10, what="release")
    assert _prometheus_stuck(app.metrics_port) == 0
    assert ADMIN not in app.log() and HEALTH not in app.log()


def test_disabling_reliability_operations_keeps_the_database_stuck_detector(app_factory: Any, tmp_path: Path) -> None:
    """The detector's series come from reliability_stuck: switching off reliability_operations (in-process
    operations) leaves them, in Prometheus and in health."""
    app = app_factory(
        "app:app",
        app_dir=APP_DIR,
        env={
            "OPS_APP_DB": str(tmp_path / "jobs.db"),
            "OTEL_RELIABILITY_STUCK_THRESHOLD": "1",
            "OTEL_RELIABILITY_STUCK_CHECK_INTERVAL": "1",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "reliability_operations,reliability_breakers,reliability_pool,"
            "reliability_process",
        },
    )
    assert http("POST", f"{app.url}/ops/start?key=video-42")[0] == 200

    def series() -> dict[str, float]:
        return {
            labels["operation_name"]: value for labels, value in scrape(app.metrics_port).get("operation_stuck", [])
        }

    found = wait_until(lambda: series().get("episode-processing") == 2 and series(), timeout=15, what="detector")
    assert "render" not in found  # the in-process operation is reliability_operations' and that is off
    _, health = get_json(f"{app.url}/api/health")
    assert health["checks"]["operations"]["status"] == "degraded"
    http("POST", f"{app.url}/ops/release")
