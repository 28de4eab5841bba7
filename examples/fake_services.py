"""Fake external services for the example app: assemblyai, gemini, auphonic, elevenlabs and gcs in one process.

The example app calls these over real HTTP, through its circuit breakers, so an outage can be staged without
touching the app: change a service's failure rate or latency at run time and watch the breaker, the error rate
and the health endpoints react.

    python examples/fake_services.py --port 9100

    POST /{service}/{anything}                   the service call: 200 JSON, or 503 when it "fails"
    GET  /control                                every service's current settings
    POST /control/{service}?failure_rate=1&latency_ms=0   change one service (either parameter may be left out)
    POST /control/reset                          every service back to healthy and fast
    GET  /health                                 {"status": "ok"}

Only the standard library, and it listens on 127.0.0.1 only. A slow call re-reads its service's latency while it
waits, so setting the latency back to 0 releases calls that are hanging (that is how a "stuck job" is ended).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SERVICES = ("assemblyai", "gemini", "auphonic", "elevenlabs", "gcs")


@dataclass
class Behaviour:
    """How one fake service answers: the share of calls that fail (0..1) and the delay before answering."""

    failure_rate: float = 0.0
    latency_ms: float = 0.0
    calls: int = 0
    failures: int = 0


class Services:
    """The mutable behaviour of every service, shared by the request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._behaviour = {name: Behaviour() for name in SERVICES}

    def get(self, name: str) -> Behaviour:
        with self._lock:
            return Behaviour(**asdict(self._behaviour[name]))

    def set(self, name: str, failure_rate: float | None, latency_ms: float | None) -> Behaviour:
        with self._lock:
            current = self._behaviour[name]
            if failure_rate is not None:
                current.failure_rate = failure_rate
            if latency_ms is not None:
                current.latency_ms = latency_ms
            return Behaviour(**asdict(current))

    def reset(self) -> None:
        with self._lock:
            for behaviour in self._behaviour.values():
                behaviour.failure_rate = 0.0
                behaviour.latency_ms = 0.0

    def record(self, name: str, failed: bool) -> None:
        with self._lock:
            self._behaviour[name].calls += 1
            self._behaviour[name].failures += int(failed)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {name: asdict(b) for name, b in self._behaviour.items()}


def _number(query: dict[str, list[str]], key: str, low: float, high: float) -> float | None:
    if key not in query:
        return None
    value = float(query[key][0])
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low:g} and {high:g}")
    return value


def make_handler(services: Services) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the app's own logs tell the story
            pass

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _drain(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path.rstrip("/")
            if path == "/health":
                self._reply(200, {"status": "ok"})
            elif path == "/control":
                self._reply(200, services.describe())
            else:
                self._call(path)

        def do_POST(self) -> None:
            self._drain()
            parts = urlsplit(self.path)
            path = parts.path.rstrip("/")
            if path == "/control/reset":
                services.reset()
                self._reply(200, services.describe())
            elif path.startswith("/control/"):
                name = path.removeprefix("/control/")
                if name not in SERVICES:
                    self._reply(404, {"error": f"unknown service {name!r}", "services": list(SERVICES)})
                    return
                query = parse_qs(parts.query)
                try:
                    failure_rate = _number(query, "failure_rate", 0, 1)
                    latency_ms = _number(query, "latency_ms", 0, 3_600_000)
                except ValueError as exc:
                    self._reply(400, {"error": str(exc)})
                    return
                self._reply(200, {name: asdict(services.set(name, failure_rate, latency_ms))})
            else:
                self._call(path)

        def _call(self, path: str) -> None:
            name = path.strip("/").split("/", 1)[0]
            if name not in SERVICES:
                self._reply(404, {"error": f"unknown service {name!r}"})
                return
            started = time.monotonic()
            # Re-read the latency while waiting: lowering it releases calls that are already hanging.
            while (time.monotonic() - started) * 1000 < services.get(name).latency_ms:
                time.sleep(0.02)
            failed = random.random() < services.get(name).failure_rate
            services.record(name, failed)
            if failed:
                self._reply(503, {"error": f"{name} is unavailable (staged failure)"})
            else:
                self._reply(200, {"service": name, "ok": True, "path": path})

    return Handler


def serve(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start the fake services in a background thread (used by tests); ``shutdown()`` stops them."""
    server = ThreadingHTTPServer((host, port), make_handler(Services()))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fake-services", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--host", default="127.0.0.1", help="keep it on loopback")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(Services()))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"fake services ({', '.join(SERVICES)}) on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
