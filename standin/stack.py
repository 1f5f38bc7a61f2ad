"""`make stack`: the offline loop on its own, for `make deploy smoke` and your scripts.

Starts the Cog server (CPU), the stand-in for Replicate and the receiver, prints their URLs and
the `export` lines that point the `replicate` client, the ship scripts and your own code at
them, and runs in the foreground until Ctrl-C, which stops everything it started. `make demo`
starts the same stack through `local_stack`.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx

from localcog import REPO
from localcog.loopback import free_port
from localcog.processes import stop_on_signals
from localcog.server import CogServerError
from receiver.signature import generate_secret
from standin.local import MODEL, ReceiverProcess, clean_env, local_replicate, receiver_process
from standin.memory import StandIn

DEPLOYMENT = "local/embeddings"
# Apart from data/receiver.db, a receiver's default store (`make receiver`): `make clean`
# removes this folder, never that one.
DATA = REPO / "data" / "local"


class StackError(Exception):
    """The stack failed to start or stopped on its own; the message is one line."""


@dataclass(frozen=True)
class LocalStack:
    """What is running, and the settings that reach it."""

    standin: StandIn
    receiver: ReceiverProcess
    api_token: str
    read_token: str
    data_dir: Path

    def api_env(self) -> dict[str, str]:
        """The `replicate` client's settings: every call goes to the stand-in."""
        return {"REPLICATE_API_TOKEN": self.api_token, "REPLICATE_BASE_URL": self.standin.base_url}

    def ship_env(self) -> dict[str, str]:
        """What `make deploy smoke` reads, pointed at this stack."""
        return {
            **self.api_env(),
            "MODEL": MODEL,
            "DEPLOYMENT": DEPLOYMENT,
            "HARDWARE": "cpu",
            "RECEIVER_URL": self.receiver.url,
            "RECEIVER_API_TOKEN": self.read_token,
        }

    def store(self) -> Path:
        """The receiver's SQLite file."""
        return self.data_dir / "receiver.db"

    def exports(self) -> str:
        """`export` lines for another shell, quoted as a shell reads them."""
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in self.ship_env().items())


def receiver_env(
    standin: StandIn, api_token: str, read_token: str, data_dir: Path, port: int
) -> dict[str, str]:
    """The receiver's settings: its embedded SQLite store and its files under `data_dir`; it
    runs corpus jobs, with the stand-in's webhooks coming back to it on `port`."""
    return {
        **clean_env(),
        "REPLICATE_API_TOKEN": api_token,  # it fetches the webhook secret from the API at start
        "REPLICATE_BASE_URL": standin.base_url,
        "RECEIVER_API_TOKEN": read_token,
        "RECEIVER_DOWNLOAD_HOSTS": standin.base_url,  # file outputs are served by the stand-in
        "RECEIVER_WORKER_POLL_SECONDS": "0.2",
        "RECEIVER_DATABASE_URL": f"sqlite:///{data_dir.resolve() / 'receiver.db'}",
        "RECEIVER_OUTPUT_DIR": str(data_dir.resolve() / "outputs"),
        "RECEIVER_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }


@contextmanager
def local_stack(data_dir: Path = DATA) -> Iterator[LocalStack]:
    """Cog, the stand-in and the receiver on loopback, with fresh tokens; stopped on exit.

    Logs go to `<data_dir>/logs/`, replaced at each start, so they never grow without end."""
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()
    api_token = f"r8_local_{secrets.token_hex(8)}"
    read_token = secrets.token_urlsafe(16)
    secret = generate_secret()
    with local_replicate(logs, api_token, secret) as standin:
        port = free_port()
        env = receiver_env(standin, api_token, read_token, data_dir, port)
        with receiver_process(env, logs / "receiver.log", port) as receiver:
            yield LocalStack(standin, receiver, api_token, read_token, data_dir)


def describe(stack: LocalStack) -> str:
    """What `make stack` prints once everything is up: where each part is, how to use it."""
    return "\n".join(
        [
            f"stack: Cog server        {stack.standin.cog_url}",
            f"stack: Replicate stand-in {stack.standin.base_url}  (model {MODEL})",
            f"stack: receiver          {stack.receiver.url}  (store: {stack.store()})",
            f"stack: logs in {stack.data_dir / 'logs'}",
            "stack: in another shell, paste these lines, then run `make deploy smoke`:",
            stack.exports(),
            "stack: then a corpus job on that deployment: python -m receiver jobs submit FILE"
            f" --deployment {DEPLOYMENT}",
            "stack: running; Ctrl-C stops everything",
        ]
    )


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    """`--data-dir`, shared by `make stack` and `make demo`."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DATA,
        help="where the receiver's store, its files and the logs go (default: data/local/)",
    )


def run_until_stopped(stack: LocalStack) -> NoReturn:
    """Block until Ctrl-C or SIGTERM; a receiver that dies on its own is an error."""
    returncode = stack.receiver.process.wait()
    raise StackError(f"the receiver exited with {returncode}; see {stack.data_dir / 'logs'}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m standin.stack", description=__doc__)
    add_data_dir_argument(parser)
    args = parser.parse_args()
    stop_on_signals()
    try:
        with local_stack(args.data_dir) as stack:
            print(describe(stack), flush=True)
            run_until_stopped(stack)
    except KeyboardInterrupt:
        print("stack: stopped everything it started", file=sys.stderr)
        return 0
    except (StackError, CogServerError, RuntimeError, httpx.HTTPError) as exc:
        print(f"stack: failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
