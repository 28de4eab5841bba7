"""The health framework: aggregation, 503 mapping, timeouts, failing checks, auth and health+json."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from otel_reliability import config
from otel_reliability.health.fastapi import build_routes
from otel_reliability.health.model import AdminAction, CheckContext, HealthRegistry, HealthView, Status, ViewResult
from otel_reliability.readings import Readings

HEALTH = "health-token-1"
ADMIN = "admin-token-1"


def fixed(status: Status, **summary: object) -> HealthView:
    return HealthView(f"check-{status.value}", lambda ctx: ViewResult(status, body=summary, summary=summary))


def raising(ctx: CheckContext) -> ViewResult:
    raise RuntimeError("database password=hunter2 in a message")


def slow(ctx: CheckContext) -> ViewResult:
    time.sleep(1.0)
    return ViewResult(Status.HEALTHY)


def client(
    views: list[HealthView], env: Mapping[str, str] | None = None, actions: list[AdminAction] = ()
) -> TestClient:
    registry = HealthRegistry()
    for view in views:
        registry.add_view(view)
    for action in actions:
        registry.add_action(action)
    settings = config.load({"OTEL_RELIABILITY_CHECK_TIMEOUT": "0.2", **(env or {})})
    readings = Readings(background=False)
    readings.bind(MeterProvider(resource=Resource.create({"service.name": "svc", "service.instance.id": "inst-1"})))
    app = FastAPI()
    app.router.routes[0:0] = build_routes(settings, registry, lambda: CheckContext(readings, settings))
    return TestClient(app)


def test_aggregate_is_the_worst_status() -> None:
    c = client([fixed(Status.HEALTHY), fixed(Status.DEGRADED, open_count=1)])
    r = c.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded"
    assert body["checks"]["check-degraded"] == {"status": "degraded", "open_count": 1}
    assert body["service"] == {"name": "svc", "instance_id": "inst-1"}


def test_unhealthy_is_503() -> None:
    r = client([fixed(Status.DEGRADED), fixed(Status.UNHEALTHY)]).get("/api/health")
    assert r.status_code == 503 and r.json()["status"] == "unhealthy"


def test_raising_check_is_a_failed_component_without_traceback() -> None:
    c = client([fixed(Status.HEALTHY), HealthView("db", raising)])
    r = c.get("/api/health")
    assert r.status_code == 503
    check = r.json()["checks"]["db"]
    assert check["status"] == "unhealthy" and check["error"] == "check raised RuntimeError"
    assert "hunter2" not in r.text and "Traceback" not in r.text
    detail = c.get("/api/health/db")
    assert detail.status_code == 200 and detail.json()["status"] == "unhealthy"


def test_slow_check_times_out_as_failed_component() -> None:
    started = time.monotonic()
    r = client([HealthView("slow", slow), fixed(Status.HEALTHY)]).get("/api/health")
    assert time.monotonic() - started < 0.9
    assert r.json()["checks"]["slow"]["error"] == "check timed out after 0.2s"


def test_live_runs_no_check_and_ready_follows_readiness_checks() -> None:
    c = client([HealthView("x", raising), HealthView("dep", lambda ctx: ViewResult(Status.UNHEALTHY), readiness=True)])
    assert c.get("/api/health/live").status_code == 200
    ready = c.get("/api/health/ready")
    assert ready.status_code == 503 and ready.json()["failing"] == ["dep"]
    ok = client([HealthView("x", raising), HealthView("dep", lambda ctx: ViewResult(Status.DEGRADED), readiness=True)])
    assert ok.get("/api/health/ready").status_code == 200


def test_health_json_format() -> None:
    c = client([HealthView("pool", lambda ctx: ViewResult(Status.DEGRADED, observed=(85.0, "percent"), output="85%"))])
    r = c.get("/api/health", headers={"Accept": "application/health+json"})
    assert r.headers["content-type"].startswith("application/health+json")
    body = r.json()
    assert body["status"] == "warn" and body["serviceId"] == "inst-1"
    (entry,) = body["checks"]["pool:status"]
    assert entry["componentId"] == "pool" and entry["status"] == "warn"
    assert (entry["observedValue"], entry["observedUnit"], entry["output"]) == (85.0, "percent", "85%")


def protected_view() -> HealthView:
    return HealthView(
        "pool", lambda ctx: ViewResult(Status.HEALTHY, body={"secret": 1}, summary={"n": 1}), protected=True
    )


def test_protected_view_without_configured_token_says_which_variable_to_set() -> None:
    r = client([protected_view()]).get("/api/health/pool", headers={"Authorization": "Bearer anything12"})
    assert r.status_code == 401 and "OTEL_RELIABILITY_HEALTH_TOKEN" in r.json()["error"]["message"]
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, 401), ("Bearer wrong-token", 401), (f"Basic {HEALTH}", 401), (f"Bearer {HEALTH}", 200)],
)
def test_protected_view_token(header: str | None, expected: int) -> None:
    c = client([protected_view()], {"OTEL_RELIABILITY_HEALTH_TOKEN": HEALTH})
    r = c.get("/api/health/pool", headers={"Authorization": header} if header else {})
    assert r.status_code == expected
    if expected == 200:
        assert r.json()["secret"] == 1


def test_aggregate_hides_protected_details_without_token() -> None:
    c = client([protected_view()], {"OTEL_RELIABILITY_HEALTH_TOKEN": HEALTH})
    assert c.get("/api/health").json()["checks"]["pool"] == {"status": "healthy"}
    with_token = c.get("/api/health", headers={"Authorization": f"Bearer {HEALTH}"})
    assert with_token.json()["checks"]["pool"] == {"status": "healthy", "n": 1}


def admin_action() -> AdminAction:
    def handle(ctx: CheckContext, query: Mapping[str, str]) -> dict[str, object]:
        if query.get("dry_run") not in (None, "true", "false"):
            raise ValueError("dry_run must be true or false")
        return {"dry_run": query.get("dry_run") == "true"}

    return AdminAction("stuck-operations/cleanup", "POST", handle)


def test_admin_routes_are_closed_by_default() -> None:
    c = client([], actions=[admin_action()])
    r = c.post("/api/admin/monitoring/stuck-operations/cleanup", headers={"Authorization": "Bearer x" * 3})
    assert r.status_code == 401 and "OTEL_RELIABILITY_ADMIN_TOKEN" in r.json()["error"]["message"]


def test_admin_routes_never_accept_the_health_token() -> None:
    env = {"OTEL_RELIABILITY_HEALTH_TOKEN": HEALTH, "OTEL_RELIABILITY_ADMIN_TOKEN": ADMIN}
    c = client([], env, actions=[admin_action()])
    url = "/api/admin/monitoring/stuck-operations/cleanup"
    assert c.post(url, headers={"Authorization": f"Bearer {HEALTH}"}).status_code == 401
    ok = c.post(url + "?dry_run=true", headers={"Authorization": f"Bearer {ADMIN}"})
    assert ok.status_code == 200 and ok.json()["dry_run"] is True
    bad = c.post(url + "?dry_run=perhaps", headers={"Authorization": f"Bearer {ADMIN}"})
    assert bad.status_code == 400


def test_unknown_view_is_404_not_500() -> None:
    assert client([]).get("/api/health/nope").status_code == 404


class _NoRegex:
    """Stands in for a route's compiled path: fails the test if Starlette's regex match is reached."""

    def match(self, path: str) -> None:
        raise AssertionError(f"the regex ran for {path!r}")


def _scope(path: str, root_path: str = "", kind: str = "http") -> dict[str, object]:
    return {"type": kind, "path": root_path + path, "root_path": root_path, "method": "GET", "headers": []}


def test_routes_in_front_of_the_app_match_exactly_as_starlette_and_skip_the_regex_for_other_paths() -> None:
    from starlette.routing import Match, Mount, Route

    settings = config.load({})
    registry = HealthRegistry()
    registry.add_action(AdminAction("stuck-operations", "get", lambda ctx, params: {}))
    ours = build_routes(settings, registry, lambda: CheckContext(Readings(background=False), settings))
    assert [type(r).__bases__[-1] for r in ours] == [Route, Mount, Mount]  # still a Route and Mounts
    plain = [
        Route(r.path, r.endpoint, methods=["GET"]) if isinstance(r, Route) else Mount(r.path, routes=r.routes)
        for r in ours
    ]
    scopes = [
        _scope(p, root)
        for root in ("", "/prefix")
        for p in (
            "/api/health", "/api/health/", "/api/health/live", "/api/health/pool", "/api/healthz", "/api/health/a/b",
            "/api/admin/monitoring/stuck-operations", "/api/admin", "/db/sqlite", "/", "/x/api/health",
        )
    ] + [_scope("/api/health/live", kind="websocket"), _scope("/db/sqlite", kind="websocket")]  # fmt: skip
    for route, reference in zip(ours, plain, strict=True):
        for scope in scopes:
            got, expected = route.matches(dict(scope)), reference.matches(dict(scope))
            assert got[0] == expected[0], (route.path, scope)
            if got[0] is not Match.NONE:
                assert got[1].keys() == expected[1].keys(), (route.path, scope)
        route.path_regex = _NoRegex()  # type: ignore[attr-defined]
        for path in ("/db/sqlite", "/", "/items/42"):
            assert route.matches(_scope(path)) == (Match.NONE, {})


def test_every_health_and_admin_answer_says_no_store() -> None:
    env = {"OTEL_RELIABILITY_HEALTH_TOKEN": HEALTH, "OTEL_RELIABILITY_ADMIN_TOKEN": ADMIN}
    c = client([fixed(Status.HEALTHY), fixed(Status.UNHEALTHY)], env, actions=[admin_action()])
    answers = [
        c.get("/api/health"),
        c.get("/api/health", headers={"Accept": "application/health+json"}),
        c.get("/api/health/live"),
        c.get("/api/health/ready"),
        c.get(f"/api/health/check-{Status.HEALTHY.value}"),
        c.get("/api/health/nope"),
        c.post("/api/admin/monitoring/stuck-operations/cleanup"),
        c.post(
            "/api/admin/monitoring/stuck-operations/cleanup?dry_run=true", headers={"Authorization": f"Bearer {ADMIN}"}
        ),
    ]
    assert {r.status_code for r in answers} >= {200, 401, 404, 503}
    for r in answers:
        assert r.headers.get_list("cache-control") == ["no-store"], (r.url, r.headers)
