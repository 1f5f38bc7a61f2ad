"""A local stand-in for the part of Replicate's HTTP API this project calls.

Replicate cannot be reached from CI, so the receiver's reconciliation and secret lookup (and,
later, the ship path) run against this server through the real `replicate` client, by pointing
REPLICATE_BASE_URL at it. Responses follow Replicate's OpenAPI schema; the contract tests in
tests/test_standin_contract.py check them against tests/data/replicate_openapi.json.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


@dataclass
class StandIn:
    """What the stand-in knows: its token, its webhook secret and the predictions it holds."""

    token: str
    secret: str
    base_url: str = "http://127.0.0.1"
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, prediction_id: str, status: str, **fields: Any) -> dict[str, Any]:
        """Create or replace a prediction, filling the fields Replicate always returns."""
        body = {
            "id": prediction_id,
            "model": "owner/model",
            "version": "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
            "input": {},
            "output": None,
            "logs": "",
            "error": None,
            "status": status,
            "data_removed": False,
            "created_at": "2026-11-23T08:00:00.000Z",
            "source": "api",
            "urls": {
                "get": f"{self.base_url}/v1/predictions/{prediction_id}",
                "cancel": f"{self.base_url}/v1/predictions/{prediction_id}/cancel",
                "web": f"{self.base_url}/p/{prediction_id}",
            },
            **fields,
        }
        self.predictions[prediction_id] = body
        return body


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    """Replicate's error shape: RFC 7807 problem details."""
    return JSONResponse({"title": title, "detail": detail, "status": status}, status)


def create_standin(standin: StandIn) -> FastAPI:
    app = FastAPI(title="Replicate stand-in")

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(token.encode(), standin.token.encode()):
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        return await call_next(request)

    @app.get("/v1/webhooks/default/secret")
    def webhook_secret() -> dict[str, str]:
        return {"key": standin.secret}

    @app.get("/v1/predictions/{prediction_id}", response_model=None)
    def get_prediction(prediction_id: str) -> dict[str, Any] | JSONResponse:
        found = standin.predictions.get(prediction_id)
        if found is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        return found

    return app
