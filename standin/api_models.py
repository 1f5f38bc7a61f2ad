"""The stand-in's models and versions: read-only routes over what `cog push` registered."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from standin.api_common import Memory
from standin.memory import StandIn, not_found

router = APIRouter(prefix="/v1/models")


def model_of(memory: StandIn, owner: str, name: str) -> dict[str, Any]:
    """The model `owner/name`, or Replicate's 404 problem."""
    found = memory.models.get(f"{owner}/{name}")
    if found is None:
        raise not_found(f"Model {owner}/{name}")
    return found


@router.get("/{owner}/{name}")
def get_model(memory: Memory, owner: str, name: str) -> dict[str, Any]:
    versions = memory.versions.get(f"{owner}/{name}", [])
    return {**model_of(memory, owner, name), "latest_version": versions[0] if versions else None}


@router.get("/{owner}/{name}/versions")
def list_versions(memory: Memory, owner: str, name: str) -> dict[str, Any]:
    model_of(memory, owner, name)
    return {"next": None, "previous": None, "results": memory.versions[f"{owner}/{name}"]}


@router.get("/{owner}/{name}/versions/{version_id}")
def get_version(memory: Memory, owner: str, name: str, version_id: str) -> dict[str, Any]:
    model_of(memory, owner, name)
    for version in memory.versions.get(f"{owner}/{name}", []):
        if version["id"] == version_id:
            return version
    raise not_found(f"Version {version_id}")
