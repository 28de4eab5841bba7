"""The example app (see main.py). Run: cd examples && opentelemetry-instrument uvicorn app.main:app."""
