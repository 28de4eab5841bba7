"""One HTTP layer per FastAPI request: the lean middleware while spans are not exported, the contrib
instrumentation while they are, and the request histogram right in both (issue 17).

The integration tests run tests/apps/http/lean_app.py under opentelemetry-instrument; the in-process tests
drive the lean middleware with ASGI calls on a real FastAPI app and a real SDK MeterProvider.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from otel_reliability import config
from otel_reliability.instrumentation import http_server
from otel_reliability.instrumentation._excluded_urls import _Excluded, required_literal
from otel_reliability.instrumentation._published import HistogramSeries
from tests.support import (
    ROOT,
    AppProcess,
    OtlpReceiver,
    get_json,
    http,
    require,
    scrape,
    upstream_distro_dir,
    wait_until,
)

StartApp = Callable[..., AppProcess]
COUNT = "http_server_request_duration_seconds_count"
BUCKET = "http_server_request_duration_seconds_bucket"
APP_DIR = ROOT / "tests" / "apps" / "http"
ONLY_HTTP = {
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "reliability_breakers,reliability_operations,reliability_pool,"
    "reliability_tempfiles"
}
# The labels every point of the histogram carries, in both layers (the Prometheus names of today's series).
LABELS = {"http_route", "http_request_method", "http_response_status_code", "error_type", "url_scheme",
          "network_protocol_version", "otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}  # fmt: skip
BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5", "7.5", "10"]


# --- which layer: decided from the environment -------------------------------------------------------------------


def layer_for(env: dict[str, str]) -> str:
    base = {"OTEL_SEMCONV_STABILITY_OPT_IN": "http"}  # what the distro defaults
    return http_server.choose_layer({**base, **env}, config.load({k: v for k, v in env.items() if "RELIAB" in k}))


def test_layer_is_lean_unless_a_feature_only_contrib_has_is_asked_for() -> None:
    assert layer_for({"OTEL_TRACES_EXPORTER": "none", "OTEL_TRACES_SAMPLER": "always_off"}) == "lean"
    assert layer_for({"OTEL_TRACES_EXPORTER": "otlp"}) == "lean"  # the lean layer makes the SERVER span
    assert layer_for({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "always_off"}) == "lean"
    assert layer_for({}) == "lean"
    # the per-message receive/send spans, or request headers as span attributes: contrib's
    assert layer_for({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_RELIABILITY_HTTP_MESSAGE_SPANS": "true"}) == "contrib"
    headers = {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-tenant"}
    assert layer_for({"OTEL_TRACES_EXPORTER": "otlp", **headers}) == "contrib"
    # the old (or both) conventions were asked for: only the contrib layer emits them
    assert layer_for({"OTEL_TRACES_EXPORTER": "none", "OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup"}) == "contrib"
    assert layer_for({"OTEL_TRACES_EXPORTER": "none", "OTEL_SEMCONV_STABILITY_OPT_IN": "default"}) == "contrib"
    # the user's OTEL_PYTHON_DISABLED_INSTRUMENTATIONS: no lean layer without its entry point, no layer at all
    # (and FastAPI left as it is) when they switched FastAPI instrumentation off
    no_spans = {"OTEL_TRACES_EXPORTER": "none"}
    assert layer_for({**no_spans, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "reliability_http"}) == "contrib"
    assert layer_for({**no_spans, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "x,fastapi"}) == "off"
    for forced in ("lean", "contrib", "native"):
        assert layer_for({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_RELIABILITY_HTTP_LAYER": forced}) == forced


def test_excluded_urls_pre_check_decides_exactly_as_the_regexes() -> None:
    from opentelemetry.util.http import parse_excluded_urls

    assert required_literal(r"/api/health(?:/|\?|$)") == "/api/health"
    assert required_literal(r"client/.*/info") == "client/"
    assert required_literal(r"ab?c") == "a"
    assert required_literal(r"\.json$") == ".json"
    assert required_literal(r"^/x") == required_literal("a|b") == ""
    assert required_literal(r"/x(a|b)|/y") == required_literal(r"[|]|z") == ""
    assert required_literal(r"\d+/ping") == ""
    lists = [
        r"/api/health(?:/|\?|$),/api/admin/monitoring(?:/|\?|$),/metrics(?:/|\?|$)",
        r"client/.*/info,healthz",
        r"ab?c,x{2},\.json$",
        r"^http://internal,/ping",
        r"/a,,/b",  # an empty pattern matches every URL, in contrib as here
        r"/i(tems|nternal)/1|/ping,[|]x",
    ]
    urls = ["http://127.0.0.1:8000/api/health", "http://h/api/healthz", "http://h/api/health/live", "http://h/x.json",
            "http://h/client/7/info", "http://h/items/1", "http://api/health", "http://h/ac", "http://h/xx",
            "http://internal/ping", "http://h/metrics", "http://h/b"]  # fmt: skip
    for raw in lists:
        fast = _Excluded([p.strip() for p in raw.split(",")], parse_excluded_urls(raw))
        for url in urls:
            assert fast.url_disabled(url) == parse_excluded_urls(raw).url_disabled(url), (raw, url)


# --- both layers under opentelemetry-instrument -------------------------------------------------------------------


def drive(app: AppProcess) -> None:
    """Every shape of request, once (some twice), in a known order."""
    for path, status in (
        ("/items/1", 200), ("/items/2", 200), ("/items/404", 404), ("/items/500", 500), ("/crash", 500),
        ("/no/such/path", 404), ("/stream", 200), ("/api/v1/users/7", 200), ("/sub/things/3", 200),
        ("/api/health", 200), ("/api/health/live", 200),
    ):  # fmt: skip
        assert http("GET", app.url + path)[0] == status, path
    with pytest.raises(Exception):  # noqa: B017 - the body breaks off: http.client raises IncompleteRead
        http("GET", app.url + "/stream?fail=true")
    from websockets.sync.client import connect

    with connect(app.url.replace("http://", "ws://") + "/ws") as ws:
        ws.send("hello")
        assert ws.recv() == "HELLO"
    # A client that gives up: sends a request for a slow route and closes before the answer.
    with socket.create_connection(("127.0.0.1", app.port)) as client:
        client.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.2)


def points(metrics: dict[str, list[tuple[dict[str, str], float]]]) -> dict[tuple[str, str, str], float]:
    """(route, status, error type) -> count, for the request histogram."""
    out: dict[tuple[str, str, str], float] = {}
    for labels, value in metrics.get(COUNT, []):
        key = (labels.get("http_route", ""), labels.get("http_response_status_code", ""), labels.get("error_type", ""))
        out[key] = out.get(key, 0) + value
    return out


def start(app_factory: StartApp, mode: str, receiver: OtlpReceiver) -> AppProcess:
    env = dict(ONLY_HTTP)
    if mode == "message spans":
        env["OTEL_RELIABILITY_HTTP_MESSAGE_SPANS"] = "true"
    if mode != "spans not exported":
        env.update({
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint + "/v1/traces",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        })  # fmt: skip
    return app_factory("lean_app:app", app_dir=APP_DIR, env=env, wait_path="/api/health/live")


@pytest.mark.parametrize("mode", ["spans not exported", "spans exported", "message spans"])
def test_request_histogram_has_todays_series_in_both_layers(
    app_factory: StartApp, receiver: OtlpReceiver, mode: str
) -> None:
    app = start(app_factory, mode, receiver)
    drive(app)

    def served_slow() -> dict[str, list[tuple[dict[str, str], float]]] | None:
        metrics = scrape(app.metrics_port)
        return metrics if points(metrics).get(("/slow", "200", "")) else None

    metrics = wait_until(served_slow, timeout=10, what="the abandoned /slow request to be recorded")
    got = points(metrics)
    assert got[("/items/{item_id}", "200", "")] == 2
    assert got[("/items/{item_id}", "404", "")] == 1  # a 4xx is a client error, never error.type
    assert got[("/items/{item_id}", "500", "500")] == 1
    assert got[("/crash", "500", "500")] == 1  # an exception in a route: the 500 it became, with error.type
    assert got[("", "404", "")] >= 1  # no route matched: no http.route label ...
    assert "/no/such/path" not in str(metrics[COUNT])  # ... and never the raw path
    assert got[("/api/v1/users/{user_id}", "200", "")] == 1
    assert got[("/slow", "200", "")] == 1  # the client left; the request is counted once, as served
    routes = {route for route, _, _ in got}
    assert not any(r.startswith("/api/health") for r in routes), routes  # excluded URLs stay unmeasured
    assert "/ws" not in routes  # websockets are not HTTP requests
    for labels, _ in metrics[COUNT]:
        assert set(labels) == LABELS, labels
        assert labels["http_request_method"] == "GET" and labels["url_scheme"] == "http"
        assert labels["network_protocol_version"] == "1.1"
    first = metrics[COUNT][0][0]
    buckets = [lab["le"] for lab, _ in metrics[BUCKET] if {**lab, "le": ""} == {**first, "le": ""}]
    assert buckets == [*BUCKETS, "+Inf"]

    scopes = {labels["otel_scope_name"] for labels, _ in metrics[COUNT]}
    ours = "otel_reliability.instrumentation.http_server"
    if mode != "message spans":
        # The lean layer only: not the contrib middleware, and not FastAPI's native layer.
        assert scopes == {ours}
        # A mounted FastAPI app: one count per request, under the full template (contrib counts it twice, as
        # "/sub" in the outer app and as "/things/{thing_id}" in the inner one).
        assert got[("/sub/things/{thing_id}", "200", "")] == 1
        assert not any(r in ("/sub", "/things/{thing_id}") for r in routes)
        # A stream that broke after its 200 went out: an error, with the exception's type.
        assert got[("/stream", "200", "RuntimeError")] == 1 and got[("/stream", "200", "")] == 1
        assert "http_server_active_requests" not in metrics
    if mode == "spans exported":
        # Our SERVER spans, one per request (the websocket's too), and no per-message ones.
        wanted = {(ours, "GET /stream"), (ours, "HTTP /ws")}  # a websocket has no method: "HTTP", as contrib names it
        spans = wait_until(lambda: receiver_spans(receiver) >= wanted, what="spans")
        spans = receiver_spans(receiver)
        assert {(ours, "GET /items/{item_id}"), (ours, "GET /crash"), (ours, "GET /sub/things/{thing_id}")} <= spans
        assert not any(name.endswith((" http send", " http receive")) for _, name in spans), spans
        assert not any(scope in ("fastapi", "opentelemetry.instrumentation.fastapi") for scope, _ in spans), spans
    if mode == "message spans":  # OTEL_RELIABILITY_HTTP_MESSAGE_SPANS=true: contrib's layer and its message spans
        assert scopes == {"opentelemetry.instrumentation.fastapi"}
        assert got[("/stream", "200", "")] == 2  # contrib counts the broken stream as a success
        assert got[("/sub", "200", "")] == 1 and got[("/things/{thing_id}", "200", "")] == 1  # and mounts twice
        contrib = "opentelemetry.instrumentation.fastapi"
        # a send span per message sent; a receive span per message read (a streaming response listens for the
        # client's disconnect)
        wanted = {(contrib, "GET /items/{item_id} http send"), (contrib, "GET /stream http receive")}
        wait_until(lambda: receiver_spans(receiver) >= wanted, what="message spans over OTLP")
        assert ("opentelemetry.instrumentation.fastapi", "GET /items/{item_id}") in receiver_spans(receiver)
        assert not any(scope == "fastapi" for scope, _ in receiver_spans(receiver))  # FastAPI's own layer stays out

    status, body = get_json(app.url + "/api/health/error-rate")
    assert status == 200
    errors = sum(v for (_, s, e), v in got.items() if e or int(s or 0) >= 500)
    clients = sum(v for (_, s, e), v in got.items() if not e and 400 <= int(s or 0) < 500)
    assert body["error_count"] == errors and body["client_error_count"] == clients
    assert body["total_requests"] == sum(got.values())
    assert http("GET", app.url + "/items/3")[0] == 200  # still serving
    app.stop()
    assert not re.search(r"otel-reliability(?:\[\d+\] [A-Z]+)?: recording", app.log())


def receiver_spans(receiver: OtlpReceiver) -> set[tuple[str, str]]:
    return {
        (ss.scope.name, span.name)
        for request in receiver.traces
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }


def test_native_layer_can_be_chosen_and_is_then_the_only_one(app_factory: StartApp) -> None:
    env = {**ONLY_HTTP, "OTEL_RELIABILITY_HTTP_LAYER": "native"}
    app = app_factory("lean_app:app", app_dir=APP_DIR, env=env, wait_path="/items/1")
    for path in ("/items/1", "/api/health", "/sub/things/3"):
        http("GET", app.url + path)
    got = points(scrape(app.metrics_port))
    metrics = scrape(app.metrics_port)
    assert {labels["otel_scope_name"] for labels, _ in metrics[COUNT]} == {"fastapi"}
    assert got[("/items/{item_id}", "200", "")] == 2  # the wait_path request and ours
    assert got[("/sub/things/{thing_id}", "200", "")] == 1
    assert not any(route.startswith("/api/health") for route, _, _ in got)  # our exclusions, passed to FastAPI


# --- the lean middleware in-process -------------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["queued", "recorded"])
def lean_app(request: pytest.FixtureRequest) -> Any:
    """A FastAPI app with only the lean middleware, on its own SDK MeterProvider and in-memory reader; durations
    queued until collection (no span can be sampled: the distro's default) or recorded at once (a sampler that
    may sample and the always_on exemplar filter: every measurement needs its request's context)."""
    from fastapi import FastAPI
    from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    tracer_provider = TracerProvider(sampler=ALWAYS_OFF if request.param else ALWAYS_ON)
    reader = InMemoryMetricReader()
    kept = {} if request.param else {"exemplar_filter": AlwaysOnExemplarFilter()}
    provider = MeterProvider(metric_readers=[reader], **kept)
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.api_route("/items/{item_id}", methods=["GET", "POST", "PATCH"])
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    original_build = app.build_middleware_stack
    app.build_middleware_stack = lambda: http_server.LeanHTTPMiddleware(  # type: ignore[method-assign]
        original_build(), meter_provider=provider, tracer_provider=tracer_provider
    )
    yield app, reader
    provider.shutdown()


def call(app: Any, path: str, method: str = "GET") -> int:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000")], "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


def recorded(reader: Any) -> dict[tuple[tuple[str, Any], ...], int]:
    data = reader.get_metrics_data()
    out = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == http_server.DURATION:
                    assert metric.unit == "s"
                    for point in metric.data.data_points:
                        assert list(point.explicit_bounds) == list(http_server.DURATION_BUCKETS)
                        out[tuple(sorted(point.attributes.items()))] = point.count
    return out


def test_attribute_dicts_are_cached_per_series_and_methods_stay_bounded(lean_app: Any) -> None:
    app, reader = lean_app
    for _ in range(3):
        assert call(app, "/items/1") == 200
    for i in range(100):  # made-up methods: _OTHER, and no cache entry per spelling
        call(app, "/items/1", method=f"FOO{i}")
    middleware = app.middleware_stack
    got = recorded(reader)
    get = (("http.request.method", "GET"), ("http.response.status_code", 200), ("http.route", "/items/{item_id}"),
           ("network.protocol.version", "1.1"), ("url.scheme", "http"))  # fmt: skip
    assert got[get] == 3
    assert sum(n for key, n in got.items() if ("http.request.method", "_OTHER") in key) == 100
    assert len(middleware._methods) <= 64
    assert len(middleware._attributes) == 2  # GET 200 and _OTHER 405
    cached = middleware._attributes[("GET", "http", "1.1", "/items/{item_id}", 200, None)]
    assert isinstance(cached[0], HistogramSeries) is middleware._queued
    call(app, "/items/2")
    assert middleware._attributes[("GET", "http", "1.1", "/items/{item_id}", 200, None)] is cached


@pytest.mark.parametrize("lean_app", [False], indirect=True)  # recorded at once: the failure is on the request
def test_a_broken_instrument_never_breaks_a_request(lean_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    app, _ = lean_app
    call(app, "/items/1")

    class Broken:
        def record(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("SDK bug")

    app.middleware_stack._duration = Broken()
    with caplog.at_level(logging.ERROR, logger="otel_reliability"):
        assert [call(app, "/items/1") for _ in range(3)] == [200, 200, 200]
    assert sum("HTTP request metrics are off" in r.getMessage() for r in caplog.records) == 1


def test_configure_gives_an_existing_app_the_lean_layer_and_only_it(app_factory: StartApp) -> None:
    app = app_factory("configured_app:app", app_dir=APP_DIR, env=ONLY_HTTP, instrument=False)
    for path in ("/items/1", "/items/2", "/api/health"):
        http("GET", app.url + path)
    metrics = scrape(app.metrics_port)
    # FastAPI's native layer was on when the app was created (configure() set the providers afterwards): the
    # lean layer replaced it, it does not run beside it.
    assert {labels["otel_scope_name"] for labels, _ in metrics[COUNT]} == {
        "otel_reliability.instrumentation.http_server"
    }
    assert points(metrics) == {("/items/{item_id}", "200", ""): 2}


def test_under_upstreams_distro_the_contrib_layer_is_the_only_one(app_factory: StartApp) -> None:
    """opentelemetry-distro chosen by name loads the contrib instrumentor whatever we decide: no lean layer
    beside it (contrib would find our middleware where it expects Starlette's and skip the app)."""
    try:
        upstream = upstream_distro_dir()
    except RuntimeError as exc:
        require(False, str(exc))
    env = {
        **ONLY_HTTP, "PYTHONPATH": str(upstream), "OTEL_PYTHON_DISTRO": "distro",
        "OTEL_PYTHON_CONFIGURATOR": "configurator", "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
    }  # fmt: skip
    app = app_factory("lean_app:app", app_dir=APP_DIR, env=env, wait_path="/items/1")
    http("GET", app.url + "/items/2")
    metrics = scrape(app.metrics_port)
    assert {labels["otel_scope_name"] for labels, _ in metrics[COUNT]} == {"opentelemetry.instrumentation.fastapi"}
    assert points(metrics)[("/items/{item_id}", "200", "")] == 2
    assert "Skipping FastAPI instrumentation" not in app.log()
