"""FastAPI is patched one way (instrumentation/fastapi_app.py): each hook runs at its moment, removing one
leaves the others, the last one out unwraps, and a wrapper someone put on top of ours is never removed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, applications
from fastapi.testclient import TestClient
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from otel_reliability.instrumentation import fastapi_app
from otel_reliability.instrumentation._instrumented import is_wrapped


@pytest.fixture
def seen() -> Iterator[list[Any]]:
    found: list[Any] = []
    hooks = [
        fastapi_app.Hook(fastapi_app.INIT, before=lambda kw: kw.setdefault("title", "from a hook")),
        fastapi_app.Hook(fastapi_app.INIT, after=lambda app, _: found.append(("init", app.title))),
        fastapi_app.Hook(fastapi_app.BUILD, before=lambda app: found.append(("build", app.title))),
        fastapi_app.Hook(fastapi_app.BUILD, after=lambda app, stack: found.append(("stack", type(stack))) or stack),
    ]
    before = {m: is_wrapped(FastAPI, m) for m in (fastapi_app.INIT, fastapi_app.BUILD)}
    for hook in hooks:
        fastapi_app.add(hook)
        fastapi_app.add(hook)  # twice: still once
    yield found
    for hook in hooks:
        fastapi_app.remove(hook)
    assert {m: is_wrapped(FastAPI, m) for m in before} == before


def test_each_hook_runs_once_at_its_moment_and_the_apps_keywords_win(seen: list[Any]) -> None:
    FastAPI()
    FastAPI(title="mine")
    app = FastAPI(title="served")
    app.get("/")(lambda: {"ok": True})
    assert TestClient(app).get("/").status_code == 200
    assert seen[:3] == [("init", "from a hook"), ("init", "mine"), ("init", "served")]
    assert seen[3] == ("build", "served")
    assert seen[4][0] == "stack" and len(seen) == 5


def test_removing_a_hook_leaves_the_others_and_the_last_one_unwraps() -> None:
    calls: list[str] = []
    mount = fastapi_app.Hook(fastapi_app.INIT, after=lambda app, _: calls.append("mount"))
    layer = fastapi_app.Hook(fastapi_app.INIT, after=lambda app, _: calls.append("layer"))
    was_wrapped = is_wrapped(FastAPI, "__init__")
    fastapi_app.add(mount)
    fastapi_app.add(layer)
    fastapi_app.remove(mount)
    FastAPI()
    assert calls == ["layer"]
    fastapi_app.remove(layer)
    FastAPI()
    assert calls == ["layer"]
    assert is_wrapped(FastAPI, "__init__") == was_wrapped


def test_a_wrapper_put_on_top_of_ours_stays() -> None:
    if is_wrapped(FastAPI, "__init__"):
        pytest.skip("another test's instrumentor holds the hook")
    calls: list[str] = []
    ours = fastapi_app.Hook(fastapi_app.INIT, after=lambda app, _: calls.append("ours"))
    fastapi_app.add(ours)

    def theirs(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
        calls.append("theirs")
        wrapped(*args, **kwargs)

    wrap_function_wrapper(applications, "FastAPI.__init__", theirs)
    try:
        fastapi_app.remove(ours)
        FastAPI()
        assert calls == ["theirs"]  # ours runs no hook any more; theirs is still in place
    finally:
        unwrap(FastAPI, "__init__")  # theirs
        unwrap(FastAPI, "__init__")  # ours, left under theirs
    assert not is_wrapped(FastAPI, "__init__")
