"""The one HTTP GET both checklist sources make (the app's views, a Prometheus query API): bounded by a timeout,
HTTP errors returned as statuses, network errors raised as ``Unreachable`` with a one-line reason."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping


class Unreachable(Exception):
    """No HTTP answer at all (refused, timed out, no such host)."""


def get(url: str, timeout: float, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """``(status, body)`` of a GET; 4xx/5xx are answers, not errors."""
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "otel-reliability-check", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__) from None
