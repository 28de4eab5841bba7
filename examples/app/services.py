"""The external services the example calls, each behind a circuit breaker, over real HTTP (httpx).

Three kinds of breaker on purpose, because real codebases mix them:

- assemblyai, gemini, auphonic: ``pybreaker.CircuitBreaker``. otel-reliability's instrumentor finds them with no
  code at all (they are created at import time, after ``opentelemetry-instrument`` has instrumented pybreaker).
- elevenlabs: the ``circuitbreaker`` package's ``@circuit`` decorator, also found with no code.
- gcs: a hand-written breaker like the seed's own ``api/core/circuit_breaker.py`` module, which no library adapter
  can know; one line, ``otel_reliability.register_breaker("gcs", breaker)``, makes it visible.

When a pybreaker or circuitbreaker breaker is open, its error is deliberately *not* handled here: otel-reliability
turns it into ``503`` + ``Retry-After`` + ``{"error": {"retryable": true, ...}}``. The hand-written breaker's error
is the app's own, so the app maps it itself (``main.py``), the same way.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

import httpx
import pybreaker
from circuitbreaker import circuit

import otel_reliability

FAKE_SERVICES_URL = os.environ.get("FAKE_SERVICES_URL", "http://127.0.0.1:9100").rstrip("/")
# Small numbers so that a staged outage opens a breaker after a few calls and a recovery is seen quickly.
FAIL_MAX = int(os.environ.get("EXAMPLE_BREAKER_FAIL_MAX", "3"))
RESET_TIMEOUT = float(os.environ.get("EXAMPLE_BREAKER_RESET_TIMEOUT", "30"))


class UpstreamError(Exception):
    """An external service failed (5xx, timeout, connection refused): worth retrying later."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason


class ServiceUnavailable(Exception):
    """The hand-written breaker refused the call; ``retry_after`` is when it will let one through again."""

    def __init__(self, service: str, retry_after: int) -> None:
        super().__init__(f"{service} is unavailable (circuit open)")
        self.service = service
        self.retry_after = retry_after


class SimpleBreaker:
    """A minimal hand-written breaker, shaped like the seed's: closed -> open after ``fail_max`` consecutive
    failures -> half_open after ``reset_timeout`` -> closed on one success (open again on a failure).

    ``get_state()`` returns a dict with a ``state`` key: the protocol ``register_breaker`` reads.
    """

    def __init__(self, name: str, fail_max: int, reset_timeout: float) -> None:
        self.name = name
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self._failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    def _state(self, now: float) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if now - self._opened_at >= self.reset_timeout else "open"

    def get_state(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            state = self._state(now)
            remaining = 0.0 if self._opened_at is None else max(0.0, self.reset_timeout - (now - self._opened_at))
            return {
                "state": state,
                "failure_count": self._failures,
                "fail_max": self.fail_max,
                "reset_timeout": self.reset_timeout,
                "seconds_until_retry": round(remaining, 1),
            }

    def call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            now = time.monotonic()
            if self._state(now) == "open":
                assert self._opened_at is not None
                raise ServiceUnavailable(self.name, max(1, math.ceil(self.reset_timeout - (now - self._opened_at))))
        try:
            result = func(*args, **kwargs)
        except UpstreamError:
            with self._lock:
                self._failures += 1
                if self._failures >= self.fail_max or self._opened_at is not None:
                    self._opened_at = time.monotonic()  # (re)open: a failed half-open trial starts a new wait
            raise
        with self._lock:
            self._failures = 0
            self._opened_at = None
        return result


# Generous timeouts where the provider is slow by nature (audio processing), short ones elsewhere.
TIMEOUTS = {"assemblyai": 15.0, "gemini": 15.0, "auphonic": 120.0, "elevenlabs": 15.0, "gcs": 15.0}

_client = httpx.Client(base_url=FAKE_SERVICES_URL, timeout=httpx.Timeout(15.0, connect=2.0))


def _post(service: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One call to a fake provider. Anything but a 2xx is an UpstreamError, which the breakers count."""
    try:
        response = _client.post(f"/{service}/{path}", json=payload, timeout=TIMEOUTS[service])
    except httpx.HTTPError as exc:
        raise UpstreamError(service, type(exc).__name__) from exc
    if response.status_code >= 500:
        raise UpstreamError(service, f"HTTP {response.status_code}")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


assemblyai_breaker = pybreaker.CircuitBreaker(fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT, name="assemblyai")
gemini_breaker = pybreaker.CircuitBreaker(fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT, name="gemini")
auphonic_breaker = pybreaker.CircuitBreaker(fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT, name="auphonic")
gcs_breaker = SimpleBreaker("gcs", fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT)
otel_reliability.register_breaker("gcs", gcs_breaker)


def transcribe(episode_id: int) -> dict[str, Any]:
    return assemblyai_breaker.call(_post, "assemblyai", "v2/transcript", {"episode": episode_id})


def summarize(episode_id: int, transcript: str) -> dict[str, Any]:
    return gemini_breaker.call(_post, "gemini", "v1/generate", {"episode": episode_id, "text": transcript[:200]})


def enhance_audio(episode_id: int) -> dict[str, Any]:
    return auphonic_breaker.call(_post, "auphonic", "api/productions", {"episode": episode_id})


@circuit(
    failure_threshold=FAIL_MAX, recovery_timeout=RESET_TIMEOUT, expected_exception=UpstreamError, name="elevenlabs"
)
def synthesize_voice(episode_id: int) -> dict[str, Any]:
    return _post("elevenlabs", "v1/text-to-speech", {"episode": episode_id})


def upload(object_name: str, size: int) -> dict[str, Any]:
    result: dict[str, Any] = gcs_breaker.call(_post, "gcs", "upload", {"object": object_name, "size": size})
    return result


ALL_BREAKERS = ("assemblyai", "gemini", "auphonic", "elevenlabs", "gcs")
