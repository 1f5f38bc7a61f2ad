"""`make push`: `cog push r8.im/$MODEL`, then confirm the new version through Replicate's API.

The version id is the digest on the line `cog push` prints for the pushed image,
`  image  r8.im/<owner>/<model>@sha256:<64 hex>`, and must equal the model's latest version
afterwards: a push that printed one id but left another live is a failure, not a success.
`python -m ship.push --check [TARGET]` only checks that the `cog` CLI and a running Docker are
there (what `make build` and `make predict` need too), and names TARGET in its error.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

from replicate.client import Client

from ship.api import ShipError, client, latest_version, run_cli


def missing_tools() -> list[str]:
    """What `cog build`/`cog push` need and this machine lacks, as readable phrases."""
    missing = []
    if shutil.which("cog") is None:
        missing.append("the cog CLI is not on PATH (install: https://cog.run/getting-started)")
    if shutil.which("docker") is None:
        missing.append("Docker is not installed")
    else:
        try:
            running = subprocess.run(["docker", "info"], capture_output=True, timeout=60)
            if running.returncode != 0:
                missing.append("Docker is not running (`docker info` failed)")
        except subprocess.TimeoutExpired:
            missing.append("Docker is not answering (`docker info` timed out)")
    return missing


def require_tools() -> None:
    if missing := missing_tools():
        raise ShipError("; ".join(missing))


def image_line(model: str) -> re.Pattern[str]:
    """The line of cog's push result tree that pins the image (pkg/cli/push.go, formatPushResult):
    `  image  r8.im/o/m@sha256:…`, or `  └─ image   …` under a model with managed weights."""
    ref = re.escape(f"r8.im/{model}")
    return re.compile(rf"\s*(?:[├└]─ )?image\s+{ref}(?::[\w][\w.-]*)?@sha256:([0-9a-f]{{64}})\s*")


def pushed_version(output: str, model: str) -> str:
    """The version id `cog push` printed for `model`: the digest on its image line, and only
    there (build logs print layer digests too). Without it (the registry's HEAD failed, or an
    old Cog) the push is not confirmed."""
    pattern = image_line(model)
    found = [m[1] for line in output.splitlines() if (m := pattern.fullmatch(line))]
    if not found:
        raise ShipError(
            f"cog push printed no `image  r8.im/{model}@sha256:<digest>` line, so the new "
            f"version is unknown: check https://replicate.com/{model}/versions"
        )
    return found[-1]


def cog_push(model: str) -> str:
    """Run `cog push`, echoing its output as it comes (it takes minutes); return the output."""
    lines = []
    with subprocess.Popen(
        ["cog", "push", f"r8.im/{model}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stderr.write(line)
            lines.append(line)
    if process.returncode != 0:
        raise ShipError(f"cog push r8.im/{model} failed (exit {process.returncode}); see above")
    return "".join(lines)


def confirm(api: Client, model: str, version: str) -> str:
    latest = latest_version(api, model)
    if latest != version:
        raise ShipError(f"cog push printed version {version}, but {model}'s latest is {latest}")
    return f"push: r8.im/{model} version {version} (confirmed as the latest)"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m ship.push", description=__doc__)
    parser.add_argument("--model", default=os.environ.get("MODEL"), help="owner/name")
    parser.add_argument(
        "--check",
        nargs="?",
        const="push",
        metavar="TARGET",
        help="only check for cog and Docker; errors start with TARGET (default: push)",
    )
    args = parser.parse_args()

    def body() -> str:
        if args.check:
            require_tools()
            return "cog and Docker are ready"
        if not args.model:
            raise ShipError("set MODEL to owner/name of the model on Replicate")
        api = client()  # before the long push: a missing token fails in a second
        require_tools()
        return confirm(api, args.model, pushed_version(cog_push(args.model), args.model))

    return run_cli(args.check or "push", body)


if __name__ == "__main__":
    raise SystemExit(main())
