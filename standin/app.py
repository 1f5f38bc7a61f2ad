"""A local stand-in for the part of Replicate's HTTP API the ship path and the receiver use.

Replicate cannot be reached from CI, so `make demo` and the tests point the real `replicate`
client at this server (REPLICATE_BASE_URL). It keeps models and versions, deployments and
predictions; it runs predictions on a local Cog server (`python -m cog.server.http`), one at a
time, as a deployment with one instance would; and it sends webhooks as Replicate does (see
standin/webhooks.py). Responses follow Replicate's OpenAPI schema: tests/test_standin_*.py
check them against tests/data/replicate_openapi.json.

Cog talks back on routes Replicate does not have, outside /v1 and without the API token:
`POST /_cog/{id}` (Cog's webhooks), `PUT /_uploads/{name}` (Cog's file uploads, served again
from `GET /files/{key}/{name}`, as replicate.delivery serves them).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import mimetypes
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import jsonschema
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from standin.dispatch import Dispatcher
from standin.memory import ProblemError, StandIn, not_found, now_iso
from standin.webhooks import EVENTS, Attempt, WebhookSender

PREDICTION_FIELDS = {"input", "stream", "webhook", "webhook_events_filter"}
DEPLOYMENT_LIMITS = {"min_instances": (0, 5), "max_instances": (0, 20)}


def _prediction_id() -> str:
    return base64.b32encode(os.urandom(16)).decode().lower().rstrip("=")[:26]


def _check_deployment_fields(body: dict[str, Any], required: bool) -> None:
    names = ("hardware", "min_instances", "max_instances", "version")
    if required:
        missing = [n for n in ("name", "model", *names) if n not in body]
        if missing:
            raise ProblemError(422, "Invalid request", f"missing: {', '.join(missing)}")
    for key, (low, high) in DEPLOYMENT_LIMITS.items():
        value = body.get(key, low)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ProblemError(422, "Invalid request", f"{key} must be an integer in {low}..{high}")
    if body.get("min_instances", 0) > body.get("max_instances", 20):
        raise ProblemError(422, "Invalid request", "min_instances is above max_instances")
    for key in ("hardware", "version", "name", "model"):
        if key in body and not isinstance(body[key], str):
            raise ProblemError(422, "Invalid request", f"{key} must be a string")


def _check_prediction_request(body: Any, version: dict[str, Any]) -> None:
    if not isinstance(body, dict):
        raise ProblemError(422, "Invalid request", "the body must be a JSON object")
    if unknown := set(body) - PREDICTION_FIELDS:
        raise ProblemError(422, "Invalid request", f"unknown fields: {', '.join(sorted(unknown))}")
    webhook = body.get("webhook")
    if webhook is not None and (
        not isinstance(webhook, str) or not webhook.startswith(("https://", "http://"))
    ):
        raise ProblemError(422, "Invalid request", "webhook must be an http(s) URL")
    events = body.get("webhook_events_filter", list(EVENTS))
    if not isinstance(events, list) or not set(events) <= set(EVENTS):
        raise ProblemError(422, "Invalid request", f"webhook_events_filter: a list of {EVENTS}")
    schema = version["openapi_schema"]
    input_schema = {**schema["components"]["schemas"]["Input"], "components": schema["components"]}
    try:
        jsonschema.validate(body.get("input"), input_schema)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "input"
        raise ProblemError(422, "Invalid input", f"{where}: {exc.message}") from exc


def create_standin(standin: StandIn) -> FastAPI:
    runner_box: dict[str, Dispatcher] = {}

    def record(attempt: Attempt) -> None:
        standin.attempts.append(attempt)
        standin.touched()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sender = WebhookSender(standin.secret, lambda pid: standin.predictions[pid], record)
        runner = runner_box["runner"] = Dispatcher(standin, sender)
        standin.loop, standin.apply_held = asyncio.get_running_loop(), runner.release
        task = asyncio.create_task(runner.run())
        yield
        task.cancel()
        await sender.close()
        await runner.close()

    app = FastAPI(title="Replicate stand-in", lifespan=lifespan)

    @app.exception_handler(ProblemError)
    async def problem(_: Request, exc: ProblemError) -> JSONResponse:
        body = {"title": exc.title, "detail": exc.detail, "status": exc.status}
        return JSONResponse(body, exc.status)

    @app.middleware("http")
    async def authenticate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not request.url.path.startswith("/v1/"):
            return await call_next(request)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(token.encode(), standin.token.encode()):
            detail = "You did not pass a valid authentication token"
            return JSONResponse({"title": "Unauthenticated", "detail": detail, "status": 401}, 401)
        if standin.throttled > 0:
            standin.throttled -= 1
            detail = "Request was throttled. Expected available in 1 second."
            body = {"title": "Too Many Requests", "detail": detail, "status": 429}
            return JSONResponse(body, 429, headers={"Retry-After": "1"})
        return await call_next(request)

    async def json_body(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError as exc:
            raise ProblemError(400, "Bad request", "the body is not JSON") from exc

    # --- models and versions ---------------------------------------------------------

    def model_of(owner: str, name: str) -> dict[str, Any]:
        found = standin.models.get(f"{owner}/{name}")
        if found is None:
            raise not_found(f"Model {owner}/{name}")
        return found

    @app.get("/v1/models/{owner}/{name}")
    def get_model(owner: str, name: str) -> dict[str, Any]:
        versions = standin.versions.get(f"{owner}/{name}", [])
        return {**model_of(owner, name), "latest_version": versions[0] if versions else None}

    @app.get("/v1/models/{owner}/{name}/versions")
    def list_versions(owner: str, name: str) -> dict[str, Any]:
        model_of(owner, name)
        return {"next": None, "previous": None, "results": standin.versions[f"{owner}/{name}"]}

    @app.get("/v1/models/{owner}/{name}/versions/{version_id}")
    def get_version(owner: str, name: str, version_id: str) -> dict[str, Any]:
        model_of(owner, name)
        for version in standin.versions.get(f"{owner}/{name}", []):
            if version["id"] == version_id:
                return version
        raise not_found(f"Version {version_id}")

    def version_of(model: str, version_id: str) -> dict[str, Any]:
        for version in standin.versions.get(model, []):
            if version["id"] == version_id:
                return version
        raise ProblemError(
            422, "Invalid request", f"version {version_id} of {model} does not exist"
        )

    # --- deployments -----------------------------------------------------------------

    def deployment_of(owner: str, name: str) -> dict[str, Any]:
        found = standin.deployments.get(f"{owner}/{name}")
        if found is None:
            raise not_found(f"Deployment {owner}/{name}")
        return found

    def release(number: int, model: str, version: str, config: dict[str, Any]) -> dict[str, Any]:
        return {
            "number": number,
            "model": model,
            "version": version,
            "created_at": now_iso(),
            "created_by": {"type": "user", "username": standin.owner, "name": standin.owner},
            "configuration": config,
        }

    @app.get("/v1/deployments/{owner}/{name}")
    def get_deployment(owner: str, name: str) -> dict[str, Any]:
        return deployment_of(owner, name)

    @app.post("/v1/deployments")
    async def create_deployment(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise ProblemError(422, "Invalid request", "the body must be a JSON object")
        _check_deployment_fields(body, required=True)
        key = f"{standin.owner}/{body['name']}"
        if key in standin.deployments:
            raise ProblemError(409, "Conflict", f"Deployment {key} already exists")
        version_of(body["model"], body["version"])
        config = {k: body[k] for k in ("hardware", "min_instances", "max_instances")}
        standin.deployments[key] = {
            "owner": standin.owner,
            "name": body["name"],
            "current_release": release(1, body["model"], body["version"], config),
        }
        return standin.deployments[key]

    @app.patch("/v1/deployments/{owner}/{name}")
    async def update_deployment(owner: str, name: str, request: Request) -> dict[str, Any]:
        deployment = deployment_of(owner, name)
        body = await json_body(request)
        if not isinstance(body, dict) or not body:
            raise ProblemError(
                422, "Invalid request", "give at least one of version, hardware, ..."
            )
        current = deployment["current_release"]
        config = {**current["configuration"]}
        config.update(
            {k: body[k] for k in ("hardware", "min_instances", "max_instances") if k in body}
        )
        _check_deployment_fields(config, required=False)
        version = body.get("version", current["version"])
        version_of(current["model"], version)
        if version != current["version"] or config != current["configuration"]:
            number = current["number"] + 1
            deployment["current_release"] = release(number, current["model"], version, config)
        return deployment

    # --- predictions -----------------------------------------------------------------

    @app.post("/v1/deployments/{owner}/{name}/predictions", status_code=201)
    async def create_prediction(owner: str, name: str, request: Request) -> dict[str, Any]:
        current = deployment_of(owner, name)["current_release"]
        body = await json_body(request)
        _check_prediction_request(body, version_of(current["model"], current["version"]))
        pid = _prediction_id()
        prediction = standin.put(
            pid,
            "starting",
            model=current["model"],
            version=current["version"],
            input=body["input"],
            created_at=now_iso(),
            deployment=f"{owner}/{name}",
        )
        runner = runner_box["runner"]
        if body.get("webhook"):
            events = body.get("webhook_events_filter", list(EVENTS))
            runner.sender.subscribe(pid, body["webhook"], events, standin.retry_delays)
        if standin.cog_url is not None:
            runner.queue.put_nowait(pid)
        standin.touched()
        return prediction

    def prediction_of(prediction_id: str) -> dict[str, Any]:
        found = standin.predictions.get(prediction_id)
        if found is None:
            raise not_found(f"Prediction {prediction_id}")
        return found

    @app.get("/v1/predictions/{prediction_id}")
    def get_prediction(prediction_id: str) -> dict[str, Any]:
        return prediction_of(prediction_id)

    @app.post("/v1/predictions/{prediction_id}/cancel")
    async def cancel_prediction(prediction_id: str) -> dict[str, Any]:
        prediction_of(prediction_id)
        await runner_box["runner"].cancel(prediction_id)
        return prediction_of(prediction_id)

    @app.get("/v1/webhooks/default/secret")
    def webhook_secret() -> dict[str, str]:
        return {"key": standin.secret}

    # --- Cog's side: its webhooks and uploads ----------------------------------------

    @app.post("/_cog/{prediction_id}")
    async def from_cog(prediction_id: str, request: Request) -> Response:
        update = await json_body(request)
        if isinstance(update, dict):
            runner_box["runner"].from_cog(prediction_id, update)
        return Response(status_code=200)

    @app.put("/_uploads/{name}")
    async def upload(name: str, request: Request) -> Response:
        key = uuid.uuid4().hex
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        standin.files[key] = (await request.body(), content_type)
        return Response(
            status_code=201, headers={"Location": f"{standin.base_url}/files/{key}/{name}"}
        )

    @app.get("/files/{key}/{name}")
    def download(key: str, name: str) -> Response:
        if key not in standin.files:
            raise not_found("File")
        content, content_type = standin.files[key]
        return Response(content, media_type=content_type)

    return app
