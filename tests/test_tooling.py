"""The foundation: the generated Cog schema, the Makefile's help and the demo."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ship import cog_schema
from ship.cog_server import REPO


def test_schema_is_generated_from_the_runner_in_cogs_layout(schema_file: Path) -> None:
    schemas = json.loads(schema_file.read_text())["components"]["schemas"]
    inputs = schemas["Input"]
    assert inputs["required"] == ["texts"]
    assert list(inputs["properties"]) == ["texts", "normalize", "output_format"]
    assert inputs["properties"]["texts"]["items"] == {"type": "string"}
    assert inputs["properties"]["normalize"]["default"] is True
    fmt = inputs["properties"]["output_format"]
    assert fmt["allOf"] == [{"$ref": "#/components/schemas/output_format"}]
    assert fmt["default"] == "json"
    assert schemas["output_format"]["enum"] == ["json", "npy"]
    assert cog_schema.runner_ref(REPO / "cog.yaml") == ("predict", "Runner")


def test_make_help_lists_every_target() -> None:
    out = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for target in [
        "setup",
        "weights",
        "schema",
        "demo",
        "test",
        "serve",
        "receiver",
        "bench",
        "lint",
    ]:
        assert re.search(rf"^\s+{target}\s+\S", out, re.MULTILINE), target


def test_demo_serves_and_predicts(schema_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ship.demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout
    assert "3 vectors of 384 floats" in result.stdout
    similar, dissimilar = (
        float(v) for v in re.findall(r"cosine\(\w+ pair\)\s+=\s+(-?[\d.]+)", result.stdout)
    )
    assert similar > dissimilar + 0.3
