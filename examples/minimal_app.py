"""The smallest app: no otel_reliability code at all. Run it under opentelemetry-instrument."""

from fastapi import FastAPI, HTTPException

app = FastAPI()


@app.get("/items/{item_id}")
def read_item(item_id: int) -> dict[str, int]:
    if item_id == 500:
        raise HTTPException(status_code=500, detail="boom")
    if item_id == 404:
        raise HTTPException(status_code=404, detail="nope")
    return {"item_id": item_id}


@app.get("/crash")
def crash() -> None:
    raise RuntimeError("unhandled")
