"""A local stand-in for the part of Replicate's HTTP API the ship path and the receiver use.

Replicate cannot be reached from CI, so `make demo` and the tests point the real `replicate`
client at this server (REPLICATE_BASE_URL). It keeps models and versions, deployments and
predictions; it runs predictions on a local Cog server (`python -m cog.server.http`), one at a
time, as a deployment with one instance would; and it sends webhooks as Replicate does (see
ship/webhook_sender.py). Responses follow Replicate's OpenAPI schema: tests/test_standin_*.py
check them against tests/data/replicate_openapi.json.

Cog talks back on routes Replicate does not have, outside /v1 and without the API token:
`POST /_cog/{id}` (Cog's webhooks), `PUT /_uploads/{name}` (Cog's file uploads, served again
from `GET /files/{key}/{name}`, as replicate.delivery serves them).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import mimetypes
import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from ship.webhook_sender import EVENTS, RETRY_DELAYS, Attempt, WebhookSender

TERMINAL = {"succeeded", "failed", "canceled", "aborted"}
PREDICTION_FIELDS = {"input", "stream", "webhook", "webhook_events_filter"}
DEPLOYMENT_LIMITS = {"min_instances": (0, 5), "max_instances": (0, 20)}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _seconds_between(start: str, end: str) -> float:
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


class ProblemError(Exception):
    """An answer in Replicate's error shape: RFC 7807 problem details."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def not_found(what: str) -> ProblemError:
    return ProblemError(404, "Not found", f"{what} could not be found.")


@dataclass
class StandIn:
    """What the stand-in knows. Mutated on its event loop; tests read it from theirs."""

    token: str
    secret: str
    base_url: str = "http://127.0.0.1"
    cog_url: str | None = None  # where predictions run; None: they stay `starting`
    owner: str = "local"
    retry_delays: tuple[float, ...] = RETRY_DELAYS
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # newest first
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    throttled: int = 0  # answer this many API requests with 429, as a busy Replicate would
    hold_completions: bool = False  # keep terminal states from Cog until release_completions()
    changed: threading.Condition = field(default_factory=threading.Condition)
    _held: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _release: Callable[[], None] | None = None

    def add_version(self, model: str, openapi_schema: dict[str, Any]) -> str:
        """Register a version of `model` (created if new), as `cog push` does; returns its id."""
        owner, name = model.split("/", 1)
        canonical = json.dumps(openapi_schema, sort_keys=True).encode()
        version_id = hashlib.sha256(canonical).hexdigest()
        self.models.setdefault(model, _model(owner, name, self.base_url))
        versions = self.versions.setdefault(model, [])
        if not any(v["id"] == version_id for v in versions):
            versions.insert(0, _version(version_id, openapi_schema))
        return version_id

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
            "urls": self._urls(prediction_id),
            **fields,
        }
        self.predictions[prediction_id] = body
        return body

    def _urls(self, prediction_id: str) -> dict[str, str]:
        return {
            "get": f"{self.base_url}/v1/predictions/{prediction_id}",
            "cancel": f"{self.base_url}/v1/predictions/{prediction_id}/cancel",
            "web": f"{self.base_url}/p/{prediction_id}",
        }

    def wait_until(self, condition: Callable[[StandIn], bool], timeout: float) -> bool:
        """Block until `condition` holds after some change here, or `timeout` passes."""
        with self.changed:
            return self.changed.wait_for(lambda: condition(self), timeout)

    def touched(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def release_completions(self) -> None:
        """Apply the terminal states held back by `hold_completions` (from any thread)."""
        assert self._loop is not None
        assert self._release is not None
        self._loop.call_soon_threadsafe(self._release)


def _model(owner: str, name: str, base_url: str) -> dict[str, Any]:
    return {
        "url": f"{base_url}/{owner}/{name}",
        "owner": owner,
        "name": name,
        "description": "sentence-transformers/all-MiniLM-L6-v2 text embeddings",
        "visibility": "private",
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": 0,
        "cover_image_url": None,
        "default_example": None,
        "is_official": False,
    }


def _version(version_id: str, openapi_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": version_id,
        "created_at": now_iso(),
        "cog_version": "0.23.1",
        "openapi_schema": openapi_schema,
    }


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


class Runner:
    """Runs queued predictions on the Cog server, one at a time, and applies Cog's events."""

    def __init__(self, standin: StandIn, sender: WebhookSender) -> None:
        self.standin = standin
        self.sender = sender
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.done: dict[str, asyncio.Event] = {}
        self.http = httpx.AsyncClient(timeout=30)

    async def run(self) -> None:
        while True:
            prediction_id = await self.queue.get()
            prediction = self.standin.predictions[prediction_id]
            if prediction["status"] != "starting":  # canceled while queued
                continue
            done = self.done[prediction_id] = asyncio.Event()
            await self._start(prediction)
            await done.wait()

    async def _start(self, prediction: dict[str, Any]) -> None:
        pid = prediction["id"]
        request = {
            "id": pid,
            "input": prediction["input"],
            "webhook": f"{self.standin.base_url}/_cog/{pid}",
            "webhook_events_filter": list(EVENTS),
        }
        try:
            response = await self.http.post(
                f"{self.standin.cog_url}/predictions",
                json=request,
                headers={"Prefer": "respond-async"},
            )
        except httpx.HTTPError as exc:
            self.apply(pid, {"status": "failed", "error": f"model unreachable: {exc!r}"})
            return
        if response.status_code >= 400:
            self.apply(pid, {"status": "failed", "error": f"model refused: {response.text}"})

    def from_cog(self, prediction_id: str, update: dict[str, Any]) -> None:
        """A webhook from Cog; terminal ones wait while the stand-in holds completions."""
        if update.get("status") in TERMINAL and self.standin.hold_completions:
            self.standin._held.append((prediction_id, update))
        else:
            self.apply(prediction_id, update)

    def apply(self, prediction_id: str, update: dict[str, Any]) -> None:
        """Apply one state (in the shape of Cog's webhooks) and notify subscribers."""
        prediction = self.standin.predictions.get(prediction_id)
        if prediction is None or prediction["status"] in TERMINAL:
            return
        status = update.get("status", prediction["status"])
        before = dict(prediction)
        prediction["status"] = status
        for key in ("output", "error"):
            if key in update:
                prediction[key] = update[key]
        prediction["logs"] = update.get("logs") or prediction["logs"]
        if "predict_time" in (update.get("metrics") or {}):
            prediction["metrics"] = {"predict_time": update["metrics"]["predict_time"]}
        events = []
        if status == "processing" and "started_at" not in prediction:
            prediction["started_at"] = now_iso()
            events.append("start")
        if prediction["output"] != before["output"] and status not in TERMINAL:
            events.append("output")
        if prediction["logs"] != before["logs"] and status not in TERMINAL:
            events.append("logs")
        if status in TERMINAL:
            prediction["completed_at"] = now_iso()
            prediction.setdefault("started_at", prediction["completed_at"])
            total = _seconds_between(prediction["created_at"], prediction["completed_at"])
            prediction["metrics"] = {**prediction.get("metrics", {}), "total_time": total}
            events.append("completed")
            if prediction_id in self.done:
                self.done[prediction_id].set()
        for event in events:
            self.sender.notify(prediction_id, event)
        self.standin.touched()

    def release(self) -> None:
        self.standin.hold_completions = False
        held, self.standin._held = self.standin._held, []
        for prediction_id, update in held:
            self.apply(prediction_id, update)

    async def cancel(self, prediction_id: str) -> None:
        prediction = self.standin.predictions[prediction_id]
        if prediction["status"] == "starting":
            self.apply(prediction_id, {"status": "canceled"})
        elif prediction["status"] == "processing":
            # Cog answers with a `canceled` webhook, applied like any other.
            await self.http.post(f"{self.standin.cog_url}/predictions/{prediction_id}/cancel")

    async def close(self) -> None:
        await self.http.aclose()


def create_standin(standin: StandIn) -> FastAPI:
    runner_box: dict[str, Runner] = {}

    def record(attempt: Attempt) -> None:
        standin.attempts.append(attempt)
        standin.touched()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sender = WebhookSender(standin.secret, lambda pid: standin.predictions[pid], record)
        runner = runner_box["runner"] = Runner(standin, sender)
        standin._loop, standin._release = asyncio.get_running_loop(), runner.release
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
