"""`make deploy`: point the deployment at a model version, creating it on first use.

Idempotent: get the deployment, then update it only if its release differs from what is asked
(version, hardware, instance limits), or create it when Replicate answers 404. Prints the
deployment's current release either way.
"""

from __future__ import annotations

import argparse
import os
from typing import TypedDict

from replicate.client import Client
from replicate.deployment import Deployment

from ship.api import ShipError, client, is_missing, latest_version, reported, run_cli, with_backoff


def describe(deployment: Deployment, action: str) -> str:
    release = deployment.current_release
    if release is None:
        return f"deployment {deployment.owner}/{deployment.name} {action}, no release yet"
    config = release.configuration
    return (
        f"deployment {deployment.owner}/{deployment.name} {action}: release {release.number}, "
        f"{release.model}@{release.version[:12]} on {config.hardware}, "
        f"{config.min_instances}-{config.max_instances} instances"
    )


class Release(TypedDict):
    """What a deployment's release is made of; `make deploy` converges on it."""

    version: str
    hardware: str
    min_instances: int
    max_instances: int


def current_release(deployment: Deployment) -> Release | None:
    release = deployment.current_release
    if release is None:
        return None
    config = release.configuration
    return Release(
        version=release.version,
        hardware=config.hardware,
        min_instances=config.min_instances,
        max_instances=config.max_instances,
    )


def deploy(api: Client, name: str, model: str, wanted: Release) -> str:
    owner, _, short_name = name.partition("/")
    if not owner or not short_name:
        raise ShipError(f"DEPLOYMENT must be owner/name, not {name!r}")
    try:
        with reported(f"deployment {name}"):
            current = api.deployments.get(name)
    except ShipError as exc:
        if not is_missing(exc):
            raise
        with reported(f"create deployment {name}"):
            created = with_backoff(
                lambda: api.deployments.create(name=short_name, model=model, **wanted)
            )
        return describe(created, "created")
    if current_release(current) == wanted:
        return describe(current, "unchanged")
    with reported(f"update deployment {name}"):
        updated = with_backoff(
            lambda: api.deployments.update(
                deployment_owner=owner, deployment_name=short_name, **wanted
            )
        )
    return describe(updated, "updated")


def count(value: str, name: str) -> int:
    if not value.isdigit():
        raise ShipError(f"{name} must be a whole number, not {value!r}")
    return int(value)


def main() -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m ship.deploy", description=__doc__)
    parser.add_argument("--deployment", default=env("DEPLOYMENT"), help="owner/name")
    parser.add_argument("--model", default=env("MODEL"), help="owner/name of the model")
    parser.add_argument("--version", default=env("VERSION"), help="default: the model's latest")
    parser.add_argument("--hardware", default=env("HARDWARE", "gpu-t4"))
    parser.add_argument("--min-instances", default=env("MIN_INSTANCES", "0"))
    parser.add_argument("--max-instances", default=env("MAX_INSTANCES", "1"))
    args = parser.parse_args()

    def body() -> str:
        if not args.deployment or not args.model:
            raise ShipError("set DEPLOYMENT and MODEL (owner/name each)")
        api = client()
        version = args.version or latest_version(api, args.model)
        wanted = Release(
            version=version,
            hardware=args.hardware,
            min_instances=count(args.min_instances, "MIN_INSTANCES"),
            max_instances=count(args.max_instances, "MAX_INSTANCES"),
        )
        return deploy(api, args.deployment, args.model, wanted)

    return run_cli("deploy", body)


if __name__ == "__main__":
    raise SystemExit(main())
