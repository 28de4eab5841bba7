"""A prefork test app: /block holds its worker's event loop, so concurrent calls spread over the workers."""

import time

from fastapi import FastAPI

app = FastAPI()


@app.get("/block")
async def block() -> dict[str, bool]:
    time.sleep(0.3)  # deliberately blocking: this worker accepts nothing else meanwhile
    return {"ok": True}
