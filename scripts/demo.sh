#!/usr/bin/env bash
# Runs the example app under opentelemetry-instrument: app on http://127.0.0.1:8000, metrics on :9464.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
echo "demo: app on http://127.0.0.1:8000, health at /api/health, metrics on http://127.0.0.1:9464/metrics"
cd examples
exec ../$BIN/opentelemetry-instrument ../$BIN/uvicorn minimal_app:app --host 127.0.0.1 --port 8000
