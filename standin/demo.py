"""`make demo`: the whole loop, offline, on the receiver's embedded default store.

Starts the Cog server (CPU), the stand-in for Replicate and the receiver (SQLite in data/local/);
deploys with the deploy script and checks the loop with the smoke script, exactly as `make
deploy smoke` does against Replicate; makes a few more predictions (one with npy output, which
the receiver fetches as a file, and one that fails); prints what the receiver collected; and
stops everything it started, on Ctrl-C or a failure too.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import httpx
from replicate.client import Client

from localcog import REPO
from localcog.polling import PollTimeoutError, poll
from localcog.processes import stop_on_signals
from localcog.server import CogServerError
from ship.api import TERMINAL
from ship.smoke import TEXTS
from standin.local import clean_env
from standin.stack import DEPLOYMENT, StackError, add_data_dir_argument, local_stack

T = TypeVar("T")
MORE_INPUTS: list[dict[str, Any]] = [
    {"texts": TEXTS[:2]},
    {"texts": TEXTS, "output_format": "npy"},
    {"texts": [TEXTS[0]] * 64, "normalize": False},
    {"texts": []},  # the model refuses it: a failed prediction, with its message
]


class DemoError(Exception):
    """A step failed; the message is one line."""


def step(message: str) -> None:
    print(f"demo: {message}", flush=True)


def run_script(name: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", f"ship.{name}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(result.stderr.strip() or f"{name} exited with {result.returncode}")
    return result.stdout.strip()


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 180) -> T:
    """Poll `check` (the receiver is another process) until it returns a result."""
    try:
        return poll(check, timeout, 0.2, what)
    except PollTimeoutError as exc:
        raise DemoError(str(exc)) from None


def table(states: list[dict[str, Any]]) -> str:
    header = (
        "prediction",
        "status",
        "texts",
        "predict s",
        "total s",
        "deliveries",
        "files",
        "error",
    )
    rows = [header]
    for s in states:
        metrics = s.get("metrics") or {}
        files = ", ".join(f"{f['state']} {f['size'] or 0} B" for f in s["files"]) or "-"
        # coglet puts "Prediction failed: Async prediction failed: " before the runner's words.
        error = re.sub(r"^(?:(?:Async )?[Pp]rediction failed: )+", "", s.get("error") or "")
        rows.append(
            (
                s["id"],
                s["status"],
                str(len(s["input"].get("texts", []))),
                f"{metrics.get('predict_time', 0):.3f}",
                f"{metrics.get('total_time', 0):.3f}",
                ",".join(d["status"] for d in s["deliveries"]),
                files,
                error or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def run(stack: ExitStack, data_dir: Path) -> None:
    step("starting the Cog server (CPU), the stand-in for Replicate and the receiver")
    local = stack.enter_context(local_stack(data_dir))
    standin = local.standin
    receiver = local.receiver
    step(f"receiver up at {receiver.url}, on its embedded store: {local.store()}")
    step(f"logs in {data_dir / 'logs'}")
    ship_env = {**clean_env(), **local.ship_env()}
    step(run_script("deploy", ship_env))
    step(run_script("smoke", ship_env))
    smoke_id = next(reversed(standin.predictions))  # the stand-in has run only that one

    step(f"{len(MORE_INPUTS)} more predictions, webhooks to the receiver")
    api = Client(api_token=local.api_token, base_url=standin.base_url)
    webhook = f"{receiver.url}/webhooks/replicate"
    ids = [smoke_id] + [
        api.deployments.predictions.create(DEPLOYMENT, input=i, webhook=webhook).id
        for i in MORE_INPUTS
    ]
    headers = {"authorization": f"Bearer {local.read_token}"}
    read = httpx.Client(base_url=receiver.url, headers=headers)
    stack.callback(read.close)

    def all_settled_states() -> list[dict[str, Any]] | None:
        """Every prediction's state, once all are terminal and their files settled."""
        states = []
        for pid in ids:
            response = read.get(f"/predictions/{pid}")
            if response.status_code != 200:
                return None
            state = response.json()
            settled = all(f["state"] in ("done", "dead", "refused") for f in state["files"])
            if state["status"] not in TERMINAL or not settled:
                return None
            states.append(state)
        return states

    states = wait_for(all_settled_states, "collecting the predictions")
    step("what the receiver collected (GET /predictions/{id} on its read API):")
    print(table(states))
    step(f"files fetched before Replicate would delete them are under {data_dir / 'outputs'}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m standin.demo", description=__doc__)
    add_data_dir_argument(parser)
    args = parser.parse_args()
    stop_on_signals()
    try:
        with ExitStack() as stack:
            run(stack, args.data_dir)
            step("stopping everything it started")
    except KeyboardInterrupt:
        print("demo: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except (DemoError, StackError, CogServerError, RuntimeError, httpx.HTTPError) as exc:
        print(f"demo: failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
