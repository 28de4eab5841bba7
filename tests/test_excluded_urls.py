"""The lean layer's excluded-URL shortcuts decide as contrib's own helpers for the same inputs: the URL as
``get_host_port_url_tuple`` builds it, the patterns as ``get_excluded_urls("FASTAPI")`` reads them from the
environment (the regex pre-check itself: tests/test_http_layer.py)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.instrumentation.asgi import get_host_port_url_tuple
from opentelemetry.util.http import get_excluded_urls

from otel_reliability.instrumentation._excluded_urls import _url, excluded_urls

SCOPES: list[dict[str, Any]] = [
    {"scheme": "http", "server": ("127.0.0.1", 8000), "path": "/api/health", "headers": [(b"host", b"svc:8000")]},
    {"scheme": "https", "server": ("10.0.0.1", 443), "path": "/x", "headers": [(b"accept", b"*/*")]},
    {"scheme": "http", "server": ("10.0.0.1", 80), "path": "/metrics", "headers": []},
    {"server": None, "path": "/p"},
    {"scheme": "http", "server": ("h", 80), "path": "", "headers": [(b"user-agent", b"x"), (b"host", b"api")]},
]


@pytest.mark.parametrize("scope", SCOPES)
def test_the_url_matched_is_the_one_contrib_matches(scope: dict[str, Any]) -> None:
    assert _url(scope) == get_host_port_url_tuple(scope)[2]


ENVIRONMENTS = [
    {"OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": r"/api/health(?:/|\?|$),/metrics(?:/|\?|$)"},
    {"OTEL_PYTHON_EXCLUDED_URLS": r"client/.*/info,healthz"},
    {"OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "/only-fastapi", "OTEL_PYTHON_EXCLUDED_URLS": "/generic"},
    {"OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "", "OTEL_PYTHON_EXCLUDED_URLS": "/generic"},
    {"OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": r"^http://internal,/a,,/b"},
    {},
]
URLS = ["http://svc:8000/api/health", "http://h/api/healthz", "http://h/metrics", "http://h/client/7/info",
        "http://h/only-fastapi", "http://h/generic", "http://internal/x", "http://h/c", "http://h/"]  # fmt: skip


@pytest.mark.parametrize("env", ENVIRONMENTS, ids=lambda env: ";".join(f"{k}={v}" for k, v in env.items()) or "none")
def test_the_environment_is_read_as_contrib_reads_it(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in ("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ours, contrib = excluded_urls(), get_excluded_urls("FASTAPI")
    for url in URLS:
        assert (ours is not None and ours.url_disabled(url)) == contrib.url_disabled(url), url
