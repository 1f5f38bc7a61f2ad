"""`python -m receiver serve | secret | send-test | jobs`; every failure is one line, exit
non-zero."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NoReturn

import httpx
from pydantic import ValidationError

from receiver.jobs import cli as jobs_cli
from receiver.settings import Settings, SettingsError, signing_keys
from receiver.signature import generate_secret, signed_headers

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def fail(message: str) -> NoReturn:
    one_line = " ".join(message.split())  # some client errors span several lines
    print(f"receiver: {one_line}", file=sys.stderr)
    sys.exit(2)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = str(first["msg"]).removeprefix("Value error, ")
        fail(f"invalid setting {str(first['loc'][0]).upper()}: {reason}")


def webhook_secrets(settings: Settings) -> list[str]:
    """The configured secrets, or the account's default one fetched once from Replicate."""
    configured = settings.secrets()
    if configured or settings.replicate_api_token is None:
        return configured
    from receiver.replicate_api import default_webhook_secret

    try:
        return [default_webhook_secret(settings)]
    except Exception as exc:  # the client raises many kinds; any is one line to the user
        fail(f"could not fetch the webhook secret from Replicate: {exc}")


def signing_keys_or_exit(settings: Settings) -> list[bytes]:
    try:
        return signing_keys(webhook_secrets(settings))
    except SettingsError as exc:
        fail(str(exc))


def check_output_dir(path: Path) -> None:
    """Files are fetched long after the start: find an unwritable folder now, not then, without
    creating anything (the downloader creates the folder when it first needs it)."""
    existing = path
    while not existing.exists():  # the nearest folder that exists, where it would be created
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        if existing == path:
            with tempfile.TemporaryFile(dir=path, prefix=".write-check-"):
                pass
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        fail(f"invalid setting RECEIVER_OUTPUT_DIR: {str(path)!r} is not writable ({exc.strerror})")


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken before opening the store: uvicorn would say it in the
    middle of its start-up lines and exit 3. (localcog/server.py has a twin for Cog's server:
    the receiver ships on its own and imports nothing from the repository.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            pass  # binds as uvicorn will (SO_REUSEADDR: a port in TIME_WAIT is free)
    except (OSError, OverflowError) as exc:
        errno = exc.errno if isinstance(exc, OSError) else None
        reason = os.strerror(errno) if errno else str(exc)  # without create_server's addendum
        fail(f"cannot listen on {host}:{port}: {reason}")


def masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def short_reason(exc: BaseException) -> str:
    """The driver's own words, first line only: psycopg says 'connection failed: connection to
    server at "h", port 5432 failed: FATAL:  database "x" does not exist' and a hint below."""
    cause = getattr(exc, "orig", None) or exc
    text = (getattr(cause, "strerror", None) or str(cause) or type(cause).__name__).strip()
    line = text.splitlines()[0] if text else type(cause).__name__
    line = line.rsplit("failed: ", 1)[-1]
    for prefix in ("FATAL:", "ERROR:"):
        line = line.removeprefix(prefix)
    return " ".join(line.split())[:200]


def serve(host: str, port: int, access_log: bool, forwarded_allow_ips: str | None) -> None:
    import uvicorn
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from receiver.app import create_app
    from receiver.connections import with_header_deadline
    from receiver.runtime import background_workers, open_store
    from receiver.yielding import Arrivals

    settings = load_settings()
    if forwarded_allow_ips is not None:  # the flag wins over RECEIVER_FORWARDED_ALLOW_IPS
        try:
            settings = Settings(receiver_forwarded_allow_ips=forwarded_allow_ips)
        except ValidationError as exc:
            reason = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            fail(f"invalid --forwarded-allow-ips: {reason}")
    signing = signing_keys_or_exit(settings)
    check_output_dir(settings.receiver_output_dir)
    check_port(host, port)
    try:
        store = open_store(settings)
    except (SQLAlchemyError, OSError, CommandError) as exc:
        url = masked(settings.receiver_database_url)
        fail(f"store {url} unavailable: {short_reason(exc)}")
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    arrivals = Arrivals()
    workers = background_workers(store, settings, arrivals)
    app = create_app(settings, signing, store, workers=workers, arrivals=arrivals)
    trusted = settings.receiver_forwarded_allow_ips
    # uvicorn's default trusts X-Forwarded-For from 127.0.0.1: any local process could then
    # claim any address. Off unless the proxy's address is given.
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=access_log,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        http=with_header_deadline(settings.receiver_header_timeout_seconds),
        limit_concurrency=settings.receiver_max_connections,
    )


def send_test(url: str, prediction_id: str | None = None) -> None:
    """Sign a sample prediction with the configured secret and post it, as Replicate would."""
    key = signing_keys_or_exit(load_settings())[0]
    body = json.dumps(
        {
            "id": prediction_id or f"test-{uuid.uuid4().hex[:12]}",
            "status": "succeeded",
            "output": [[0.0] * 3],
            "logs": "",
            "error": None,
            "metrics": {"predict_time": 0.01},
        }
    ).encode()
    msg_id = f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(time.time()))
    headers = signed_headers(key, msg_id, timestamp, body)
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"could not reach {url}: {exc}")
    print(f"{response.status_code} {response.text}")
    if not response.is_success:
        sys.exit(1)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m receiver", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the webhook endpoint and the read API")
    run.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a container")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument(
        "--access-log", action="store_true", help="log every request (/metrics counts them anyway)"
    )
    run.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="behind a reverse proxy: its address(es) or network(s), comma-separated; "
        "X-Forwarded-For/-Proto are believed from these only (default: "
        "RECEIVER_FORWARDED_ALLOW_IPS, else from nobody)",
    )
    secret = commands.add_parser(
        "secret", help="print the default webhook secret from Replicate's API"
    )
    secret.add_argument(
        "--generate", action="store_true", help="print a fresh random whsec_ secret instead"
    )
    test = commands.add_parser("send-test", help="post a signed sample prediction to --url")
    test.add_argument("--url", required=True)
    test.add_argument("--prediction-id", help="the sample's id (default: test-<random>)")
    jobs_cli.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "jobs":
        try:
            sys.exit(jobs_cli.run(args))
        except jobs_cli.CliError as exc:
            fail(str(exc))
    if args.command == "serve":
        serve(args.host, args.port, args.access_log, args.forwarded_allow_ips)
    elif args.command == "secret" and args.generate:
        print(generate_secret())
    elif args.command == "secret":
        settings = load_settings()
        if settings.replicate_api_token is None:
            fail("set REPLICATE_API_TOKEN to fetch the webhook secret (or use --generate)")
        print(webhook_secrets(settings)[0])
    else:
        send_test(args.url, args.prediction_id)


if __name__ == "__main__":
    main()
