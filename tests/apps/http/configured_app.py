"""An app started without opentelemetry-instrument: ``otel_reliability.configure(app)`` after the app exists."""

from __future__ import annotations

from fastapi import FastAPI

import otel_reliability

app = FastAPI()


@app.get("/items/{item_id}")
def read_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


otel_reliability.configure(app)
