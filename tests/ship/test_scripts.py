"""The ship scripts' failure paths: one readable line and a non-zero exit, never a traceback;
and the client gaps they cover (429 on POST, `aborted`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from replicate.client import Client
from replicate.exceptions import ReplicateError

from ship.api import ShipError, raw_prediction, with_backoff
from ship.push import pushed_version
from standin.local import MODEL
from tests.support.commands import run_module
from tests.support.live import LiveStandIn
from tests.support.standin import STANDIN_TOKEN, standin_env

VERSION = "a" * 64


def run(name: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_module(f"ship.{name}", *args, env=env, timeout=120)


def one_line_failure(result: subprocess.CompletedProcess[str], prog: str, words: str) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"{prog}: ")
    assert words in result.stderr, result.stderr


@pytest.fixture
def registered_env(standin: LiveStandIn, schema_file: Path) -> dict[str, str]:
    """The stand-in's environment, with MODEL's version registered from the Cog schema."""
    standin.memory.add_version(MODEL, json.loads(schema_file.read_text()))
    return standin_env(standin.url)


@pytest.mark.parametrize(
    ("name", "env", "words"),
    [
        ("deploy", {"MODEL": MODEL, "DEPLOYMENT": "local/x"}, "REPLICATE_API_TOKEN is not set"),
        ("deploy", {}, "set DEPLOYMENT and MODEL"),
        ("smoke", {"DEPLOYMENT": "local/x"}, "set DEPLOYMENT (owner/name) and RECEIVER_URL"),
        ("push", {}, "set MODEL"),
    ],
)
def test_missing_settings(name: str, env: dict[str, str], words: str) -> None:
    one_line_failure(run(name, env), name, words)


def test_deploy_failures_are_one_line(registered_env: dict[str, str]) -> None:
    base = {**registered_env, "MODEL": MODEL, "DEPLOYMENT": "local/x"}
    one_line_failure(
        run("deploy", {**base, "MODEL": "local/nothing"}),
        "deploy",
        "model local/nothing: Replicate answered 404",
    )
    one_line_failure(
        run("deploy", {**base, "REPLICATE_API_TOKEN": "r8_wrong"}), "deploy", "answered 401"
    )
    one_line_failure(run("deploy", {**base, "DEPLOYMENT": "nobody"}), "deploy", "owner/name")
    one_line_failure(
        run("deploy", {**base, "MIN_INSTANCES": "two"}), "deploy", "MIN_INSTANCES must be"
    )
    one_line_failure(
        run("deploy", {**base, "VERSION": VERSION}), "deploy", f"version {VERSION} of {MODEL}"
    )
    one_line_failure(
        run("deploy", {**base, "REPLICATE_BASE_URL": "http://127.0.0.1:9"}),
        "deploy",
        "cannot reach http://127.0.0.1:9",
    )


def test_smoke_failures_are_one_line(registered_env: dict[str, str]) -> None:
    base = {**registered_env, "RECEIVER_URL": "http://127.0.0.1:9", "RECEIVER_API_TOKEN": "t"}
    one_line_failure(
        run("smoke", {**base, "DEPLOYMENT": "local/none"}),
        "smoke",
        "create a prediction on local/none: Replicate answered 404",
    )
    assert (
        run("deploy", {**registered_env, "MODEL": MODEL, "DEPLOYMENT": "local/x"}).returncode == 0
    )
    # The stand-in here runs no model: the prediction never completes, the deadline ends it.
    one_line_failure(
        run("smoke", {**base, "DEPLOYMENT": "local/x", "SMOKE_TIMEOUT": "1"}),
        "smoke",
        "not collected by the receiver in time (receiver unreachable",
    )
    assert (
        "Replicate says it is starting"
        in run("smoke", {**base, "DEPLOYMENT": "local/x", "SMOKE_TIMEOUT": "0.5"}).stderr
    )
    one_line_failure(
        run("smoke", {**base, "DEPLOYMENT": "local/x", "RECEIVER_API_TOKEN": ""}),
        "smoke",
        "RECEIVER_API_TOKEN is not set",
    )


def test_push_without_cog_or_docker_is_one_line(tmp_path: Any) -> None:
    # A PATH with python only: neither cog nor docker can be found.
    (tmp_path / "python").symlink_to(sys.executable)
    result = run("push", {"MODEL": MODEL, "REPLICATE_API_TOKEN": "r8_x", "PATH": str(tmp_path)})
    one_line_failure(result, "push", "the cog CLI is not on PATH")
    assert "Docker is not installed" in result.stderr
    # What `make build` and `make predict` run first.
    one_line_failure(run("push", {"PATH": str(tmp_path)}, "--check"), "push", "the cog CLI is not")


LAYER = "1" * 64
CONFIG = "2" * 64


def push_output(image_line: str) -> str:
    """What `cog push r8.im/acme/embed` prints (Cog 0.23, pkg/cli/push.go), digests and all."""
    return (
        "Building Docker image from environment in cog.yaml as r8.im/acme/embed...\n"
        "#12 exporting to image\n"
        f"#12 exporting layers 2.1s done\n#12 writing image sha256:{CONFIG} done\n"
        "#12 naming to r8.im/acme/embed done\n\n"
        "Pushing to r8.im/acme/embed...\nPushing layers...\n"
        f"{LAYER[:12]}: Pushing [==================================================>]  1.2GB\r\n"
        f"latest: digest: sha256:{LAYER} size: 2207\n\n"
        f"{image_line}\n\n"
        "Run your model on Replicate:\n    https://replicate.com/acme/embed\n"
    )


@pytest.mark.parametrize(
    "line",
    [
        f"  image  r8.im/acme/embed@sha256:{VERSION}",
        f"  └─ image   r8.im/acme/embed@sha256:{VERSION}",  # under a model with managed weights
    ],
)
def test_push_reads_the_version_from_the_image_line(line: str) -> None:
    assert pushed_version(push_output(line), "acme/embed") == VERSION


@pytest.mark.parametrize(
    "line",
    [
        "  image  r8.im/acme/embed",  # the registry's HEAD failed: no digest
        f"  image  r8.im/acme/embed-v2@sha256:{VERSION}",  # another model
        f"  image  r8.im/other/embed@sha256:{VERSION}",
        f"Pushed r8.im/acme/embed@sha256:{VERSION}",  # not cog's image line
        "",
    ],
)
def test_push_without_the_image_digest_fails_in_one_line(line: str) -> None:
    with pytest.raises(ShipError, match=r"printed no `image  r8\.im/acme/embed@sha256") as error:
        pushed_version(push_output(line), "acme/embed")
    assert "\n" not in str(error.value)


def test_post_is_retried_on_429_with_backoff(
    registered_env: dict[str, str], standin: LiveStandIn
) -> None:
    memory = standin.memory
    api = Client(api_token=STANDIN_TOKEN, base_url=registered_env["REPLICATE_BASE_URL"])
    version = memory.versions[MODEL][0]["id"]
    memory.throttled = 2
    slept: list[float] = []
    created = with_backoff(
        lambda: api.deployments.create(
            name="busy",
            model=MODEL,
            version=version,
            hardware="cpu",
            min_instances=0,
            max_instances=1,
        ),
        sleep=slept.append,
    )
    assert created.name == "busy"
    assert len(slept) == 2
    assert slept[1] <= 2.0  # full jitter under base * 2**attempt
    memory.throttled = 10
    with pytest.raises(ReplicateError) as refused:
        with_backoff(
            lambda: api.deployments.update("local", "busy", max_instances=2), 2, 1, slept.append
        )
    assert refused.value.status == 429
    assert len(slept) == 3


def test_aborted_predictions_are_read_as_raw_json(
    registered_env: dict[str, str], standin: LiveStandIn
) -> None:
    memory = standin.memory
    memory.put("gone", "aborted")
    api = Client(api_token=STANDIN_TOKEN, base_url=registered_env["REPLICATE_BASE_URL"])
    assert raw_prediction(api, "gone")["status"] == "aborted"
