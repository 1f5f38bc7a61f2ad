"""The stand-in's deployments: create, read and update, each change a new release.

Checked as Replicate checks them (instance limits, known versions), so the ship scripts meet
the same refusals here as they would there.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from standin.api_common import Memory, json_body, version_of
from standin.memory import ProblemError, StandIn, not_found

DEPLOYMENT_LIMITS = {"min_instances": (0, 5), "max_instances": (0, 20)}
CONFIGURATION = ("hardware", "min_instances", "max_instances")

router = APIRouter(prefix="/v1/deployments")


def check_deployment_fields(body: dict[str, Any], required: bool) -> None:
    """Refuse a deployment body Replicate would refuse, with its 422 problem."""
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


def deployment_of(memory: StandIn, owner: str, name: str) -> dict[str, Any]:
    """The deployment `owner/name`, or Replicate's 404 problem."""
    found = memory.deployments.get(f"{owner}/{name}")
    if found is None:
        raise not_found(f"Deployment {owner}/{name}")
    return found


def release(
    memory: StandIn, number: int, model: str, version: str, config: dict[str, Any]
) -> dict[str, Any]:
    """A deployment's release in Replicate's shape, made by the stand-in's one user."""
    return {
        "number": number,
        "model": model,
        "version": version,
        "created_at": memory.now_iso(),
        "created_by": {"type": "user", "username": memory.owner, "name": memory.owner},
        "configuration": config,
    }


@router.get("/{owner}/{name}")
def get_deployment(memory: Memory, owner: str, name: str) -> dict[str, Any]:
    return deployment_of(memory, owner, name)


@router.post("")
async def create_deployment(memory: Memory, request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ProblemError(422, "Invalid request", "the body must be a JSON object")
    check_deployment_fields(body, required=True)
    key = f"{memory.owner}/{body['name']}"
    if key in memory.deployments:
        raise ProblemError(409, "Conflict", f"Deployment {key} already exists")
    version_of(memory, body["model"], body["version"])
    config = {k: body[k] for k in CONFIGURATION}
    memory.deployments[key] = {
        "owner": memory.owner,
        "name": body["name"],
        "current_release": release(memory, 1, body["model"], body["version"], config),
    }
    return memory.deployments[key]


@router.patch("/{owner}/{name}")
async def update_deployment(
    memory: Memory, owner: str, name: str, request: Request
) -> dict[str, Any]:
    deployment = deployment_of(memory, owner, name)
    body = await json_body(request)
    if not isinstance(body, dict) or not body:
        raise ProblemError(422, "Invalid request", "give at least one of version, hardware, ...")
    current = deployment["current_release"]
    config = {**current["configuration"]}
    config.update({k: body[k] for k in CONFIGURATION if k in body})
    check_deployment_fields(config, required=False)
    version = body.get("version", current["version"])
    version_of(memory, current["model"], version)
    if version != current["version"] or config != current["configuration"]:
        number = current["number"] + 1
        deployment["current_release"] = release(memory, number, current["model"], version, config)
    return deployment
