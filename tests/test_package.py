"""The model package's files: cog.yaml valid for Cog, pins exact, the image kept lean."""

from __future__ import annotations

import re
from pathlib import Path

import cog
import jsonschema
import pytest
import yaml

from ship.cog_server import REPO

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def cog_yaml() -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load((REPO / "cog.yaml").read_text())
    return data


def test_cog_yaml_validates_against_cogs_schema(cog_yaml: dict[str, object]) -> None:
    schema = yaml.safe_load((DATA / "cog_config_schema_v1.0.json").read_text())
    jsonschema.validate(cog_yaml, schema)


def test_cog_yaml_uses_current_keys(cog_yaml: dict[str, object]) -> None:
    build = cog_yaml["build"]
    assert isinstance(build, dict)
    assert cog_yaml["run"] == "predict.py:Runner"
    assert "predict" not in cog_yaml
    assert build["gpu"] is True
    assert build["python_version"] == "3.11"
    assert build["sdk_version"] == cog.__version__  # the SDK we test with is the one we ship
    assert not {"python_packages", "pre_install"} & set(build)
    assert (REPO / build["python_requirements"]).is_file()


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_every_requirement_is_pinned(name: str) -> None:
    lines = [
        line.strip()
        for line in (REPO / name).read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-r "))
    ]
    assert lines
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.+]*", line), line


def test_torch_is_pinned_to_the_available_cpu_build() -> None:
    assert "torch==2.13.0" in (REPO / "requirements.txt").read_text().splitlines()


def test_dockerignore_keeps_non_model_parts_out_of_the_image() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for part in ["receiver", "tests", "ship", "bench", ".venv", ".git", "Makefile", "data"]:
        assert part in ignored, part
    for needed in ["predict.py", "embedder", "weights", "cog.yaml", "requirements.txt"]:
        assert needed not in ignored
        assert (REPO / needed).exists()
