"""The model package's files: cog.yaml valid for Cog, pins exact, the image kept lean."""

from __future__ import annotations

import fnmatch
import re

import cog
import jsonschema
import pytest
import yaml

from localcog import REPO
from tests.support import DATA
from tests.support.commands import repository_files


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


@pytest.mark.parametrize(
    "name", ["requirements.txt", "requirements-receiver.txt", "requirements-dev.txt"]
)
def test_every_requirement_is_pinned(name: str) -> None:
    lines = [
        line.strip()
        for line in (REPO / name).read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-r "))
    ]
    assert lines
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z,]+\])?==[0-9][A-Za-z0-9.+]*", line), line


def test_torch_is_pinned_to_the_available_cpu_build() -> None:
    assert "torch==2.13.0" in (REPO / "requirements.txt").read_text().splitlines()


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for our file: a path is out if it or a parent matches a pattern."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatchcase(prefix, pattern)
        or fnmatch.fnmatchcase(prefix, pattern.removeprefix("**/"))
        or (
            pattern.startswith("**/")
            and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], pattern[3:])
        )
        for prefix in prefixes
        for pattern in patterns
    )


def test_dockerignore_keeps_non_model_parts_out_of_the_image() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    out = [
        "receiver/app.py",
        "tests/model/test_cog_server.py",
        "standin/demo.py",
        "bench/model.py",
        ".venv/bin/python",
        ".git/HEAD",
        "Makefile",
        "data/receiver.db",
        "embedder/__pycache__/engine.cpython-311.pyc",
        ".cog/openapi_schema.json",
        "weights/.model.safetensors.partial",
    ]
    kept = [
        "cog.yaml",
        "predict.py",
        "requirements.txt",
        "embedder/engine.py",
        "weights/manifest.json",
        "weights/model.safetensors",
        "weights/tokenizer.json",
        ".cog/tmp/build/cog.whl",
    ]
    assert [p for p in out if not dockerignored(p, patterns)] == []
    assert [p for p in kept if dockerignored(p, patterns)] == []
    # Whatever the repository gains later stays out unless the model needs it.
    listed = repository_files()
    in_image = {p for p in listed if not dockerignored(p, patterns)}
    model = {"cog.yaml", "predict.py", "requirements.txt", ".dockerignore"}
    assert {p for p in in_image if not p.startswith(("embedder/", "weights/"))} == model
