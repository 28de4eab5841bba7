"""Figure 7: what each HTTP layer costs per request, in-process, in CPU time.

The same FastAPI app (one async route returning a small dict) is called through ASGI directly, without a
server or a socket, bare and under each layer, every layer on its own real SDK providers (traces sampled
always_off and not exported, metrics to an in-memory reader: the lean layer's situation). Time is CPU time of
this process (``time.process_time``), best of several repetitions: other processes on a busy machine change
wall-clock throughput a lot and CPU time per call much less. The layer's cost is its row minus the bare row;
uvicorn's own per-request work (parsing, the socket) comes on top of every row in a real server.

    python benchmarks/run.py --only layer [--quick]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCOPE = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
    "path": "/trivial", "raw_path": b"/trivial", "root_path": "", "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")],
    "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
}  # fmt: skip


def _app(telemetry: dict[str, Any]) -> Any:
    from fastapi import FastAPI

    app = FastAPI(telemetry=telemetry)

    @app.get("/trivial")
    async def trivial() -> dict[str, bool]:
        return {"ok": True}

    return app


def _providers() -> tuple[Any, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    return TracerProvider(sampler=ALWAYS_OFF), MeterProvider(metric_readers=[InMemoryMetricReader()])


_OFF = {"tracing": False, "metrics": False, "logs": False}


def bare() -> Any:
    return _app(_OFF)


def lean() -> Any:
    from otel_reliability.instrumentation.http_server import LeanHTTPMiddleware

    tracer, meters = _providers()  # sampler always_off, as under the distro: durations queued until collection
    app = _app(_OFF)
    original = app.build_middleware_stack
    app.build_middleware_stack = lambda: LeanHTTPMiddleware(original(), meter_provider=meters, tracer_provider=tracer)
    return app


def lean_prefork() -> Any:
    """The lean layer in a prefork worker: each request also counted in its crash-safe tally (a shared file
    mapping, otel_reliability/crash_safe.py). Its series get their slots on the first call, made here."""
    import atexit
    import shutil
    import tempfile

    from otel_reliability import crash_safe

    directory = tempfile.mkdtemp(prefix="bench-tally-")
    atexit.register(shutil.rmtree, directory, True)
    crash_safe.open_in(directory, "w-bench")
    try:
        app = lean()
        asyncio.run(_calls(app, 1))
    finally:
        crash_safe.open_in(None)  # the other layers' apps are single-process ones
    return app


def contrib() -> Any:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    tracer, meters = _providers()
    app = _app(_OFF)
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracer, meter_provider=meters, exclude_spans=["receive", "send"]
    )
    return app


def contrib_under_native() -> Any:
    """The contrib instrumentation with FastAPI's native layer left on: before issue 17, what every request went
    through while spans were exported (the native wrapper runs, sees contrib and defers)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    tracer, meters = _providers()
    app = _app({"tracer_provider": tracer, "meter_provider": meters})
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracer, meter_provider=meters, exclude_spans=["receive", "send"]
    )
    return app


def native() -> Any:
    tracer, meters = _providers()
    return _app({"tracer_provider": tracer, "meter_provider": meters, "logs": False, "operation_spans": False})


LAYERS: dict[str, tuple[str, Callable[[], Any]]] = {
    "bare": ("bare FastAPI (native layer off)", bare),
    "lean": ("lean middleware (ours while spans are not exported)", lean),
    "lean_prefork": ("lean middleware in a prefork worker (+ the crash-safe tally)", lean_prefork),
    "contrib": ("contrib FastAPI instrumentation, receive/send spans off, native layer off", contrib),
    "contrib_native": (
        "contrib with FastAPI's native wrapper deferring to it (spans exported, before)",
        contrib_under_native,
    ),
    "native": ("FastAPI's native layer, no operation spans", native),
}


async def _calls(app: Any, n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    started = time.process_time()
    for _ in range(n):
        await app(dict(SCOPE), receive, send)
    return (time.process_time() - started) / n * 1e6


def figure(quick: bool) -> list[str]:
    calls, repetitions, rounds = (300, 2, 1) if quick else (3000, 5, 3)
    apps = {name: make() for name, (_, make) in LAYERS.items()}
    for app in apps.values():
        asyncio.run(_calls(app, 200))  # builds the middleware stack, warms caches
    best: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):  # interleaved, so drift hits every layer alike
        for name, app in apps.items():
            best[name].append(min(asyncio.run(_calls(app, calls)) for _ in range(repetitions)))
    base = min(best["bare"])
    lines = [
        "## 7. HTTP layer cost per request, in-process (CPU time)",
        "",
        f"{calls} ASGI calls of a small async route per measurement, best of {repetitions}, {rounds} interleaved "
        "rounds; no server, no socket (benchmarks/http_layer.py). The layer's cost is its row minus bare.",
        "",
        "| layer | CPU µs per request (best round) | rounds | cost over bare µs |",
        "|---|---|---|---|",
    ]
    for name, (label, _) in LAYERS.items():
        values = best[name]
        lines.append(
            f"| {label} | {min(values):.1f} | {', '.join(f'{v:.0f}' for v in values)} | {min(values) - base:+.1f} |"
        )
    return [*lines, "", *_tally_cost(min(best["lean"]) - base)]


def _tally_cost(lean_cost: float) -> list[str]:
    """What a prefork worker adds per request, measured alone (the layer rows differ by less than their noise):
    the tally's add (a bisect and two float additions into the shared mapping), against the lean layer's own
    cost in this run; and what a single process pays (a test of the series' cached slot, None)."""
    import tempfile
    import timeit

    from otel_reliability import crash_safe
    from otel_reliability.instrumentation.http_server import DURATION_BUCKETS

    with tempfile.TemporaryDirectory() as directory:
        table = crash_safe.Table(Path(directory) / "t.tally", name="h", bounds=DURATION_BUCKETS, meta={})
        slot = table.slot({"http.route": "/trivial"})
        n = 200_000
        add = min(timeit.repeat(lambda: table.add(slot, 0.0123), number=n, repeat=5)) / n * 1e9  # type: ignore[arg-type]
        none: int | None = None
        test = min(timeit.repeat(lambda: none is not None, number=n, repeat=5)) / n * 1e9
        empty = min(timeit.repeat(lambda: None, number=n, repeat=5)) / n * 1e9
    add, test = add - empty, test - empty  # the lambda call itself is not part of the request's cost
    return [
        f"Tally per request (prefork worker): {add:.0f} ns = {add / 1000 / lean_cost * 100:.1f}% of the lean "
        f"layer's own cost ({lean_cost:.1f} µs) in this run; a single process pays the slot test, {test:.0f} ns.",
        "",
    ]
