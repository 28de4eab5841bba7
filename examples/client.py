"""A small HTTP client that retries the way the seed's frontend ``fetchWithRetry`` meant to, done right.

    python examples/client.py POST http://127.0.0.1:8000/api/episodes/1/transcribe

What it does differently from the seed:

- It retries only what the server marks retryable: an error body ``{"error": {"retryable": true}}`` (the shape
  the example app and otel-reliability's breaker mapping answer with). A 400, 404 or 409 is returned at once.
- It honours ``Retry-After`` (seconds or an HTTP date): an open circuit breaker says when it will let a call
  through again; asking earlier only earns another 503. If that wait exceeds the budget, it gives up at once
  instead of sleeping for nothing.
- Without ``Retry-After`` it backs off exponentially with *full jitter* (a random wait up to the exponential
  bound), so a thousand clients that failed together do not come back together.
- It is bounded twice: a number of attempts and a total time budget.
- A network error (refused, reset, timeout) is retried only for idempotent methods, or when the caller says the
  request is idempotent: a POST that timed out may have been applied, and doing it twice is not "safe".
"""

from __future__ import annotations

import argparse
import email.utils
import json
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. The defaults suit an interactive caller: at most 4 attempts within 30 s."""

    max_attempts: int = 4
    base_delay: float = 0.5  # first backoff bound; then 1, 2, 4 ... seconds
    max_delay: float = 10.0  # no single wait (backoff or Retry-After) longer than this
    budget: float = 30.0  # total seconds, waits included, after which we give up


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    attempts: int = 1
    waits: list[float] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of an error body, or {} when there is none."""
        try:
            payload = self.json()
        except ValueError:
            return {}
        error = payload.get("error") if isinstance(payload, dict) else None
        return error if isinstance(error, dict) else {}

    @property
    def retryable(self) -> bool:
        return self.status >= 400 and self.error.get("retryable") is True


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff(attempt: int, policy: RetryPolicy, rng: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(max_delay, base * 2**attempt)] (attempt counts from 0)."""
    return rng() * min(policy.max_delay, policy.base_delay * (2**attempt))


def _send(method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float) -> Response:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return Response(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, dict(err.headers), err.read())


def request(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    policy: RetryPolicy = RetryPolicy(),
    idempotent: bool | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[int, float, str], None] | None = None,
) -> Response:
    """Send a request, retrying as described in the module docstring; return the last response.

    Raises the last network error when no attempt got a response. ``sleep``, ``clock`` and ``rng`` are
    injectable so the behaviour can be tested without waiting. ``on_retry(attempt, wait, reason)`` is called
    before each wait.
    """
    method = method.upper()
    all_headers = {"Accept": "application/json", **(headers or {})}
    body = None
    if json_body is not None:
        body = json.dumps(json_body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    may_retry_network = method in IDEMPOTENT if idempotent is None else idempotent
    started = clock()
    waits: list[float] = []
    attempt = 0
    while True:
        attempt += 1
        response: Response | None = None
        try:
            response = _send(method, url, body, all_headers, timeout)
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out: no response at all
            if not may_retry_network or attempt >= policy.max_attempts:
                raise
            reason = f"network error: {getattr(exc, 'reason', exc)}"
            wait = backoff(attempt - 1, policy, rng)
        else:
            response.attempts, response.waits = attempt, waits
            if not response.retryable or attempt >= policy.max_attempts:
                return response
            hinted = retry_after_seconds(response.headers.get("Retry-After") or response.headers.get("retry-after"))
            if hinted is not None and hinted > policy.max_delay:
                return response  # the server asks for longer than we are willing to wait: give up now
            # Never earlier than the server asked; without a hint, jittered backoff.
            wait = hinted if hinted is not None else backoff(attempt - 1, policy, rng)
            reason = f"HTTP {response.status} {response.error.get('code', '')}".strip()
        if clock() - started + wait > policy.budget:
            if response is not None:
                return response
            raise TimeoutError(f"gave up after {attempt} attempts: retry budget of {policy.budget:g}s exhausted")
        if on_retry is not None:
            on_retry(attempt, wait, reason)
        waits.append(wait)
        sleep(wait)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Call the example app with retries that respect the server.")
    parser.add_argument("method")
    parser.add_argument("url")
    parser.add_argument("--json", help="JSON request body")
    parser.add_argument("--attempts", type=int, default=RetryPolicy.max_attempts)
    parser.add_argument("--budget", type=float, default=RetryPolicy.budget)
    parser.add_argument("--max-delay", type=float, default=RetryPolicy.max_delay)
    args = parser.parse_args(argv)
    policy = RetryPolicy(max_attempts=args.attempts, budget=args.budget, max_delay=args.max_delay)

    def report(attempt: int, wait: float, reason: str) -> None:
        print(f"attempt {attempt}: {reason}; retrying in {wait:.2f}s", file=sys.stderr)

    body = json.loads(args.json) if args.json else None
    response = request(args.method, args.url, json_body=body, policy=policy, on_retry=report)
    print(f"HTTP {response.status} after {response.attempts} attempt(s)", file=sys.stderr)
    print(response.body.decode(errors="replace"))
    return 0 if response.status < 400 else 1


if __name__ == "__main__":
    sys.exit(main())
