"""The receiver benchmark's baseline: verify with the `standardwebhooks` library, store nothing.

Same framework and server as ours (FastAPI on uvicorn), so the difference measured is what our
receiver adds: stricter verification, validation and a durable, exactly-once commit.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from standardwebhooks.webhooks import Webhook

app = FastAPI()
webhook = Webhook(os.environ["REPLICATE_WEBHOOK_SECRET"])


@app.post("/webhooks/replicate")
async def receive(request: Request) -> JSONResponse:
    body = await request.body()
    try:
        webhook.verify(body, dict(request.headers))
    except Exception:  # the library raises several types on a bad delivery
        return JSONResponse({"error": "verification failed"}, 401)
    return JSONResponse({"status": "accepted"})


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
