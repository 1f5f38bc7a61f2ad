"""Validate JSON against a response schema of Replicate's OpenAPI document."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema

from tests.support import DATA

SPEC = DATA / "replicate_openapi.json"


def _nullable_to_null(node: Any) -> Any:
    """The document is OpenAPI 3.1 but still says `nullable: true`; JSON Schema wants a type."""
    if isinstance(node, dict):
        node = {k: _nullable_to_null(v) for k, v in node.items()}
        if node.pop("nullable", False) and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        return node
    if isinstance(node, list):
        return [_nullable_to_null(v) for v in node]
    return node


@cache
def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = _nullable_to_null(json.loads(SPEC.read_text()))
    return spec


def response_schema(path: str, method: str, status: str = "200") -> dict[str, Any]:
    spec = _spec()
    schema = spec["paths"][path][method]["responses"][status]["content"]["application/json"][
        "schema"
    ]
    return {**schema, "components": spec["components"]}


def validate(body: Any, path: str, method: str, status: str = "200") -> None:
    schema = response_schema(path, method, status)
    jsonschema.validate(body, schema, format_checker=jsonschema.FormatChecker())
