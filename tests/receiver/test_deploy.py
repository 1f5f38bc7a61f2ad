"""The receiver's production files say what the README promises: receiver/Dockerfile,
deploy/compose.yaml with deploy/Caddyfile (read by Caddy itself), the CI workflow, and the
smoke script CI runs (run here against a real receiver behind Caddy)."""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcog import REPO
from receiver.settings import Settings, check_database_url
from standin.local import receiver_process
from tests.support.commands import CLEAN_ENV
from tests.support.proxy import caddy_binary, caddy_proxy
from tests.support.receiving import READ_TOKEN, SECRET

DOCKERFILE = REPO / "receiver" / "Dockerfile"
COMPOSE = REPO / "deploy" / "compose.yaml"
CADDYFILE = REPO / "deploy" / "Caddyfile"
WORKFLOW = REPO / ".github" / "workflows" / "receiver-image.yml"
SMOKE = REPO / "deploy" / "smoke.sh"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    logical = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def only(items: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instruction, args in items if instruction == name]


def env_of(items: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in only(items, "ENV"):
        env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def port_of(dockerfile: list[tuple[str, str]]) -> int:
    (exposed,) = only(dockerfile, "EXPOSE")
    return int(exposed)


def test_the_image_is_slim_python_and_runs_unprivileged(dockerfile: list[tuple[str, str]]) -> None:
    assert "BASE=python:3.11-slim-bookworm" in only(dockerfile, "ARG")
    assert only(dockerfile, "FROM") == ["${BASE}"]
    user = only(dockerfile, "USER")[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert int(user.split(":")[0]) >= 1000


def test_the_image_holds_only_the_receiver(dockerfile: list[tuple[str, str]]) -> None:
    copied = [shlex.split(args)[:-1] for args in only(dockerfile, "COPY")]
    assert sorted(source for sources in copied for source in sources) == [
        "receiver/",
        "requirements-receiver.txt",
    ]
    installs = [
        command
        for run in only(dockerfile, "RUN")
        for command in run.split("&&")
        if "pip install" in command
    ]
    assert len(installs) == 1
    words = shlex.split(installs[0])
    assert [w for w in words[words.index("install") + 1 :] if not w.startswith("--")] == [
        "-r",
        "/app/requirements-receiver.txt",
    ]
    ignore = (REPO / "receiver" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:3] == ["*", "!requirements-receiver.txt", "!receiver/"]


def test_healthcheck_and_command(dockerfile: list[tuple[str, str]]) -> None:
    (healthcheck,) = only(dockerfile, "HEALTHCHECK")
    probe = json.loads(healthcheck[healthcheck.index("CMD") + len("CMD") :])
    assert probe[:2] == ["python", "-c"]
    assert f"http://127.0.0.1:{port_of(dockerfile)}/healthz" in probe[2]
    (command,) = only(dockerfile, "CMD")
    assert json.loads(command) == [
        "python",
        "-m",
        "receiver",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(port_of(dockerfile)),
    ]


def test_data_lives_on_the_volume(dockerfile: list[tuple[str, str]]) -> None:
    assert json.loads(only(dockerfile, "VOLUME")[0]) == ["/data"]
    env = env_of(dockerfile)
    assert env["RECEIVER_OUTPUT_DIR"].startswith("/data/")
    assert env["RECEIVER_DATABASE_URL"] == "sqlite:////data/receiver.db"
    check_database_url(env["RECEIVER_DATABASE_URL"])


def caddy_routes() -> dict[str, Any]:
    """deploy/Caddyfile as Caddy itself reads it (its JSON form)."""
    result = subprocess.run(
        [caddy_binary(), "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env={"PATH": "/usr/bin:/bin", "RECEIVER_DOMAIN": "hooks.example.com", "HOME": "/tmp"},
        capture_output=True,
        text=True,
        check=True,
    )
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def handlers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "handler" in node:
            yield node
        for value in node.values():
            yield from handlers(value)
    elif isinstance(node, list):
        for value in node:
            yield from handlers(value)


def test_caddy_proxies_the_public_name_to_the_receiver_service(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    config = caddy_routes()
    (server,) = config["apps"]["http"]["servers"].values()
    (route,) = server["routes"]
    assert route["match"] == [{"host": ["hooks.example.com"]}]
    proxies = [h for h in handlers(route) if h["handler"] == "reverse_proxy"]
    assert [u["dial"] for p in proxies for u in p["upstreams"]] == [
        f"receiver:{port_of(dockerfile)}"
    ]
    assert "receiver" in compose["services"]
    # /metrics is answered by Caddy itself, not proxied.
    assert {"handler": "static_response", "status_code": 404} in list(handlers(route))
    assert '"/metrics"' in json.dumps(route)
    caddy = compose["services"]["caddy"]
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    assert "RECEIVER_DOMAIN" in caddy["environment"]
    assert sorted(caddy["ports"]) == ["443:443", "443:443/udp", "80:80"]


def test_forwarded_headers_are_trusted_from_caddy_only(compose: dict[str, Any]) -> None:
    services = compose["services"]
    networks = compose["networks"]
    receiver = services["receiver"]
    caddy = services["caddy"]
    trusted = receiver["environment"]["RECEIVER_FORWARDED_ALLOW_IPS"]
    Settings(receiver_forwarded_allow_ips=trusted)  # a value the receiver accepts
    (network, attached) = next(iter(caddy["networks"].items()))
    assert attached["ipv4_address"] == trusted
    assert network in receiver["networks"]
    (pool,) = networks[network]["ipam"]["config"]
    assert ipaddress.ip_address(trusted) in ipaddress.ip_network(pool["subnet"])
    # Only Caddy is published: nobody else can reach the receiver or forge its headers.
    assert "ports" not in receiver
    assert "ports" not in services["postgres"]
    # Should the receiver be broken into, it can write only its volume and gains nothing.
    assert receiver["read_only"] is True
    assert receiver["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in receiver["security_opt"]


def test_data_and_database_are_on_named_volumes(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    services = compose["services"]
    volumes = compose["volumes"]
    data = json.loads(only(dockerfile, "VOLUME")[0])[0]
    receiver_volume = next(v for v in services["receiver"]["volumes"] if v.endswith(f":{data}"))
    postgres_volume = next(
        v for v in services["postgres"]["volumes"] if v.endswith(":/var/lib/postgresql/data")
    )
    for mount in (receiver_volume, postgres_volume):
        assert mount.split(":")[0] in volumes  # named, not a path that vanishes with a rebuild
    env = services["receiver"]["environment"]
    assert env["RECEIVER_OUTPUT_DIR"].startswith(f"{data}/")
    url = env["RECEIVER_DATABASE_URL"].replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}", "pw")
    assert url == "postgresql://receiver:pw@postgres:5432/receiver"
    check_database_url(url)
    assert services["receiver"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["postgres"]["networks"] == ["backend"]
    assert compose["networks"]["backend"]["internal"] is True
    build = services["receiver"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_the_workflow_builds_runs_and_smoke_tests_the_image() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    on = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert "receiver/**" in on["push"]["paths"]
    assert "receiver/**" in on["pull_request"]["paths"]
    image = workflow["jobs"]["image"]
    stack = workflow["jobs"]["compose"]
    runs = [step.get("run", "") for step in image["steps"]]
    assert any("docker build -f receiver/Dockerfile" in run for run in runs)
    assert any("RECEIVER_DATABASE_URL=postgresql://" in run for run in runs)
    assert image["services"]["postgres"]["image"].startswith("postgres:")
    assert any(".State.Health.Status" in run for run in runs)
    assert any(run.strip() == "deploy/smoke.sh http://127.0.0.1:8000" for run in runs)
    compose_runs = [step.get("run", "") for step in stack["steps"]]
    assert any("docker compose -f deploy/compose.yaml up" in run for run in compose_runs)
    assert any(run.strip() == "deploy/smoke.sh https://localhost" for run in compose_runs)
    assert os.access(SMOKE, os.X_OK)


def smoke(url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SMOKE), url],
        cwd=REPO,
        env={**CLEAN_ENV, "RECEIVER_CLI": f"{sys.executable} -m receiver", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_smoke_script_ci_runs_passes_through_caddy(tmp_path: Path) -> None:
    env = {
        **CLEAN_ENV,
        "REPLICATE_WEBHOOK_SECRET": SECRET,
        "RECEIVER_API_TOKEN": READ_TOKEN,
        "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "RECEIVER_OUTPUT_DIR": str(tmp_path / "out"),
        "RECEIVER_FORWARDED_ALLOW_IPS": "127.0.0.1",
    }
    with (
        receiver_process(env, tmp_path / "receiver.log") as receiver,
        caddy_proxy(f"127.0.0.1:{receiver.port}", tmp_path / "caddy") as caddy,
    ):
        ca = str(caddy.root_cert)
        settings = {"RECEIVER_API_TOKEN": READ_TOKEN, "CURL_CA": ca, "SSL_CERT_FILE": ca}
        passed = smoke(caddy.url, {**settings, "REPLICATE_WEBHOOK_SECRET": SECRET})
        other = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
        failed = smoke(caddy.url, {**settings, "REPLICATE_WEBHOOK_SECRET": other})
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "read API: smoke-" in passed.stdout
    assert "wrong secret: 401 " in passed.stdout
    assert failed.returncode == 1
    assert "smoke: the signed delivery was not accepted" in failed.stderr


def test_the_filled_env_file_is_ignored_by_git() -> None:
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0

    assert ignored("deploy/.env")
    assert not ignored("deploy/example.env")
