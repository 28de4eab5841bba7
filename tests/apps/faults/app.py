"""A minimal app for the fault suite: /ping is the cheapest request that still counts in the HTTP metrics."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/ping")
def ping() -> dict[str, bool]:
    return {"ok": True}
