"""The pool instrumentor zero-code: an app under opentelemetry-instrument, its :9464 scrape and its health view."""

from __future__ import annotations

import threading
from typing import Any

from tests.support import ROOT, Postgres, get_json, http, scrape, series_value, wait_until

APP_DIR = ROOT / "tests" / "apps" / "db"
TOKEN = "pool-health-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start(app_factory: Any, postgres: Postgres, **env: str) -> Any:
    return app_factory(
        "pool_app:app",
        app_dir=APP_DIR,
        env={"DATABASE_URL": postgres.url("psycopg"), "OTEL_RELIABILITY_HEALTH_TOKEN": TOKEN, **env},
    )


def test_saturation_seen_alike_by_scrape_and_health_view(app_factory: Any, postgres: Postgres) -> None:
    app = start(app_factory, postgres)
    name = f"127.0.0.1:{postgres.port}/{postgres.database}"
    label = {"db_client_connection_pool_name": name}
    assert http("POST", app.url + "/hold?n=3")[0] == 200
    answer: list[int] = []
    waiter = threading.Thread(target=lambda: answer.append(http("GET", app.url + "/query")[0]))
    waiter.start()
    metrics = wait_until(
        lambda: (
            (m := scrape(app.metrics_port))
            and series_value(m, "db_client_connection_pending_requests", **label) == 1
            and m
        ),
        timeout=2.5,
        what="the 4th caller pending",
    )
    assert series_value(metrics, "db_client_connection_count", **label, db_client_connection_state="used") == 3
    assert series_value(metrics, "db_client_connection_count", **label, db_client_connection_state="idle") == 0
    assert series_value(metrics, "db_client_connection_max", **label) == 3
    status, view = get_json(app.url + "/api/health/pool", headers=AUTH)
    assert status == 200 and view["status"] == "degraded"
    pool = view["pools"][name]
    assert pool["current"]["checked_out"] == 3 and pool["current"]["pending"] == 1
    assert pool["configuration"]["total_capacity"] == 3 and pool["utilization_percent"] == 100.0
    assert pool["warning"] is True
    assert get_json(app.url + "/api/health", headers=AUTH)[1]["checks"]["pool"]["status"] == "degraded"
    assert http("GET", app.url + "/api/health/pool")[0] == 401  # details need the health token
    waiter.join(10)
    assert answer == [503]
    metrics = scrape(app.metrics_port)
    assert series_value(metrics, "db_client_connection_timeouts_total", **label) == 1
    assert get_json(app.url + "/api/health/pool", headers=AUTH)[1]["pools"][name]["current"]["timeouts"] == 1
    assert http("POST", app.url + "/release")[0] == 200
    view = wait_until(  # the Readings cache a snapshot for 0.2 s
        lambda: (v := get_json(app.url + "/api/health/pool", headers=AUTH)[1])["status"] == "healthy" and v,
        timeout=3,
        what="pool health back to healthy",
    )
    assert view["pools"][name]["current"]["checked_out"] == 0
    # The password (and the user) never leave the process: not in the scrape, the health JSON or the log.
    _, _, text = http("GET", f"http://127.0.0.1:{app.metrics_port}/metrics")
    _, _, health = http("GET", app.url + "/api/health", headers=AUTH)
    _, _, timeout_view = http("GET", app.url + "/api/health/db-timeout")
    for blob in (text.decode(), health.decode(), timeout_view.decode(), repr(view), app.log()):
        assert postgres.password not in blob
        assert f"{postgres.user}:" not in blob


def test_database_restart_app_keeps_answering_and_counts_recover(app_factory: Any, postgres: Postgres) -> None:
    app = start(app_factory, postgres, POOL_TIMEOUT="1")
    name = f"127.0.0.1:{postgres.port}/{postgres.database}"
    label = {"db_client_connection_pool_name": name}
    for _ in range(3):
        assert http("GET", app.url + "/query")[0] == 200
    postgres.stop()
    try:
        codes = [http("GET", app.url + "/query")[0] for _ in range(4)]
        assert codes == [503] * 4  # checkouts fail while the database is down ...
        assert http("GET", app.url + "/api/health/live")[0] == 200  # ... and the app keeps answering
        status, _ = get_json(app.url + "/api/health", headers=AUTH)
        assert status in (200, 503)
    finally:
        postgres.start()
    wait_until(lambda: http("GET", app.url + "/query")[0] == 200, timeout=20, what="checkouts to recover")
    for _ in range(3):
        assert http("GET", app.url + "/query")[0] == 200
    metrics = scrape(app.metrics_port)
    for series in ("db_client_connection_count", "db_client_connection_pending_requests"):
        assert all(value >= 0 for _, value in metrics[series]), metrics[series]
    assert series_value(metrics, "db_client_connection_count", **label, db_client_connection_state="used") == 0
    assert series_value(metrics, "db_client_connection_pending_requests", **label) == 0
    assert (series_value(metrics, "db_client_connection_invalidations_total", **label) or 0) >= 1
    views = []

    def settled() -> bool:
        views.append(get_json(app.url + "/api/health/pool", headers=AUTH)[1]["pools"][name]["current"])
        return views[-1]["checked_out"] == 0 and views[-1]["idle"] >= 1

    wait_until(settled, timeout=3, what="no connection stuck as used")
