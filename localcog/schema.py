"""Write `.cog/openapi_schema.json` from predict.py, as `cog build` does inside the image.

coglet validates inputs only when this file exists. Generating it from the runner
(with the SDK's own inspector) keeps local runs and tests validating exactly what
the built image validates, with no hand-kept copy to drift.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from cog import _inspector

SCHEMA_PATH = Path(".cog/openapi_schema.json")


def runner_of(cog_yaml: Path = Path("cog.yaml")) -> str:
    """cog.yaml's `run`, as written: "predict.py:Runner"."""
    return str(yaml.safe_load(cog_yaml.read_text())["run"])


def runner_ref(cog_yaml: Path = Path("cog.yaml")) -> tuple[str, str]:
    """('predict', 'Runner') from cog.yaml's `run: "predict.py:Runner"`."""
    module_file, _, name = runner_of(cog_yaml).partition(":")
    return module_file.removesuffix(".py").replace("/", "."), name


def _title(name: str) -> str:
    return name.replace("_", " ").title()


def input_schema(info: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Input object and its enum schemas, laid out as Cog's Go generator lays them out."""
    properties: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    required = []
    for name, field in sorted(info.inputs.items(), key=lambda kv: kv[1].order):
        prop: dict[str, Any] = {"x-order": field.order}
        json_type = field.type.json_type()
        if field.choices:
            enums[name] = {
                "title": name,
                "description": "An enumeration.",
                "enum": list(field.choices),
                "type": json_type.get("type", "string"),
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop.update({"title": _title(name), **json_type})
        if field.default is None:
            required.append(name)
        else:
            prop["default"] = field.default
        if field.description:
            prop["description"] = field.description
        for key, attr in (
            ("minimum", "ge"),
            ("maximum", "le"),
            ("minLength", "min_length"),
            ("maxLength", "max_length"),
            ("pattern", "regex"),
        ):
            if getattr(field, attr) is not None:
                prop[key] = getattr(field, attr)
        properties[name] = prop
    schema: dict[str, Any] = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


def output_schema(info: Any) -> dict[str, Any]:
    """The Output object as `cog build` writes it.

    For `Any` the SDK's inspector gives no type, and Cog's Go parser `{"type": "object"}`.
    coglet reads only whether the type is "array" (to wrap list outputs): any other type
    leaves our ndarray and Path outputs as they are, in the image and here alike.
    """
    schema: dict[str, Any] = info.output.json_type()
    if set(schema) <= {"title"}:
        schema["type"] = "object"
    return schema


def openapi_schema(module: str, runner: str) -> dict[str, Any]:
    # The inspector prints a notice for `Any` outputs; keep stdout for the schema path only.
    with contextlib.redirect_stdout(io.StringIO()):
        info = _inspector.create_predictor(module, runner)
    inputs, enums = input_schema(info)
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {
            "schemas": {
                "Input": inputs,
                "Output": output_schema(info),
                **enums,
            }
        },
    }


def write_schema(repo: Path) -> Path:
    """Write `<repo>/.cog/openapi_schema.json` for the runner cog.yaml names."""
    path = repo / SCHEMA_PATH
    path.parent.mkdir(exist_ok=True)
    schema = openapi_schema(*runner_ref(repo / "cog.yaml"))
    path.write_text(json.dumps(schema, indent=2) + "\n")
    return path


def main() -> int:
    sys.path.insert(0, str(Path.cwd()))
    print(f"schema: wrote {write_schema(Path.cwd())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
