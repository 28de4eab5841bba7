"""An app for the HTTP-layer tests: every shape of request the request histogram must get right.

Routes: a template route (200/404/500 by id), an unhandled exception, a streaming response (optionally failing
mid-body), a slow route (for client cancellation), a route from an included router, a websocket echo and a
mounted FastAPI sub-app. No otel_reliability code: it runs under ``opentelemetry-instrument``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, HTTPException, WebSocket
from fastapi.responses import StreamingResponse

app = FastAPI()
router = APIRouter(prefix="/api/v1")
sub = FastAPI()
slow_finished: list[bool] = []


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


@app.get("/stream")
async def stream(fail: bool = False) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0.01)
        if fail:
            raise RuntimeError("failed mid-stream")

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/slow")
async def slow() -> dict[str, bool]:
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError:
        slow_finished.append(False)
        raise
    slow_finished.append(True)
    return {"ok": True}


@app.get("/slow-finished")
def slow_outcome() -> list[bool]:
    return slow_finished


@router.get("/users/{user_id}")
def read_user(user_id: int) -> dict[str, int]:
    return {"user_id": user_id}


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text(text.upper())
    await websocket.close()


@sub.get("/things/{thing_id}")
def read_thing(thing_id: int) -> dict[str, int]:
    return {"thing_id": thing_id}


app.include_router(router)
app.mount("/sub", sub)
