"""The foundation: the generated Cog schema, the Makefile's help and the demo."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from localcog import REPO
from localcog import schema as cog_schema
from tests.support.commands import marked, run_make


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
    assert schemas["Output"] == {"title": "Output", "type": "object"}  # `Any`, as cog build has it
    assert cog_schema.runner_ref(REPO / "cog.yaml") == ("predict", "Runner")


def test_make_help_lists_every_target() -> None:
    result = run_make("help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
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
        "build",
        "predict",
        "push",
        "deploy",
        "smoke",
    ]:
        assert re.search(rf"^\s+{target}\s+\S", out, re.MULTILINE), target


def demo(marker: str, data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "standin.demo", "--data-dir", str(data_dir)],
        cwd=REPO,
        env={**os.environ, "DEMO_TEST_MARKER": marker},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_demo_runs_the_whole_loop_and_stops_what_it_started(
    schema_file: Path, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    process = demo(marker, tmp_path)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    assert "deployment local/embeddings " in out
    assert re.search(r"smoke: ok, prediction \w+ on local/embeddings collected", out)
    rows = [line.split() for line in out.splitlines() if re.match(r"^[a-z0-9]{26}\s", line)]
    assert [row[1] for row in rows] == ["succeeded"] * 4 + ["failed"]
    # Start events arrived too. Webhooks of one prediction may arrive in any order (the start
    # and the terminal event are sent concurrently, as on Replicate): the set, not the order.
    assert all({"processing", row[1]} <= set(row[5].split(",")) for row in rows), rows
    assert sum("done" in row for row in rows) == 1  # the npy output, fetched as a file
    assert "Invalid input: texts must hold 1 to 1024 strings; got 0" in out
    assert marked(marker) == []


def test_demo_stops_everything_on_ctrl_c(schema_file: Path, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    process = demo(marker, tmp_path)
    assert process.stdout is not None
    for line in process.stdout:  # interrupt once the Cog server and the receiver are up
        if "receiver up at" in line:
            break
    assert marked(marker)  # they run...
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "demo: interrupted; everything it started is stopped"
    assert marked(marker) == []  # ...and are gone


@pytest.mark.parametrize("target", ["build", "predict", "push"])
def test_targets_that_need_cog_and_docker_say_so_in_one_line(target: str, tmp_path: Path) -> None:
    # No cog and no docker on this PATH: only what the Makefile itself runs.
    for tool in ("python3", "make", "sh"):
        (tmp_path / tool).symlink_to(shutil.which(tool) or tool)
    env = {**os.environ, "PATH": str(tmp_path), "MODEL": "acme/embed", "REPLICATE_API_TOKEN": "x"}
    result = run_make(target, env=env, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)]
    assert len(ours) == 1, result.stderr
    assert ours[0].startswith(f"{target}: ")  # the target the user ran, not the check it runs
    assert "the cog CLI is not on PATH" in ours[0]
    assert "Docker is not installed" in ours[0]


def test_ship_workflow_runs_the_make_targets() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ship.yml").read_text())
    assert "workflow_dispatch" in workflow[True]  # YAML 1.1 reads the key `on` as True
    steps = workflow["jobs"]["ship"]["steps"]
    setup_cog = next(s for s in steps if s.get("uses", "").startswith("replicate/setup-cog@"))
    assert setup_cog["with"]["cog-version"] == "v0.23.1"
    assert steps[-1]["run"] == "make push deploy smoke"
    env = workflow["jobs"]["ship"]["env"]
    for name in (
        "REPLICATE_API_TOKEN",
        "MODEL",
        "DEPLOYMENT",
        "RECEIVER_URL",
        "RECEIVER_API_TOKEN",
    ):
        assert name in env
    result = run_make("-n", "push", "deploy", "smoke")
    assert result.returncode == 0, result.stderr
    dry = result.stdout
    for script in ("ship.push", "ship.deploy", "ship.smoke"):
        assert f"python -m {script}" in dry


def test_demo_failing_to_start_says_why_and_stops_what_it_started(
    schema_file: Path, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    process = subprocess.Popen(
        [sys.executable, "-m", "standin.demo", "--data-dir", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "DEMO_TEST_MARKER": marker, "WEIGHTS_DIR": "/nonexistent/weights"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1
    assert err.count("\n") == 1, err
    assert err.startswith("demo: failed: cog server SETUP_FAILED")
    assert "weights/manifest.json is missing" in err
    assert marked(marker) == []
