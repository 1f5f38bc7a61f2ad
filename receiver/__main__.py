"""`python -m receiver serve | secret | send-test`; every failure is one line, exit non-zero."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import NoReturn

import httpx
from pydantic import ValidationError

from receiver.settings import Settings, SettingsError, signing_keys
from receiver.signature import sign


def fail(message: str) -> NoReturn:
    one_line = " ".join(message.split())  # some client errors span several lines
    print(f"receiver: {one_line}", file=sys.stderr)
    sys.exit(2)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"invalid setting {str(first['loc'][0]).upper()}: {first['msg']}")


def secrets(settings: Settings) -> list[str]:
    """The configured secrets, or the account's default one fetched once from Replicate."""
    configured = settings.secrets()
    if configured or settings.replicate_api_token is None:
        return configured
    from receiver.replicate_api import default_webhook_secret

    try:
        return [default_webhook_secret(settings)]
    except Exception as exc:  # the client raises many kinds; any is one line to the user
        fail(f"could not fetch the webhook secret from Replicate: {exc}")


def keys(settings: Settings) -> list[bytes]:
    try:
        return signing_keys(secrets(settings))
    except SettingsError as exc:
        fail(str(exc))


def serve(host: str, port: int, access_log: bool) -> None:
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from receiver.app import create_app
    from receiver.runtime import build

    settings = load_settings()
    signing = keys(settings)
    try:
        store, workers = build(settings)
    except (SQLAlchemyError, OSError) as exc:
        fail(f"store {settings.receiver_database_url!r} unavailable: {exc.__class__.__name__}")
    app = create_app(settings, signing, store, workers=workers)
    uvicorn.run(app, host=host, port=port, access_log=access_log)


def send_test(url: str) -> None:
    """Sign a sample prediction with the configured secret and post it, as Replicate would."""
    key = keys(load_settings())[0]
    body = json.dumps(
        {
            "id": f"test-{uuid.uuid4().hex[:12]}",
            "status": "succeeded",
            "output": [[0.0] * 3],
            "logs": "",
            "error": None,
            "metrics": {"predict_time": 0.01},
        }
    ).encode()
    msg_id, timestamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"could not reach {url}: {exc}")
    print(f"{response.status_code} {response.text}")
    if not response.is_success:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m receiver", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the webhook endpoint and the read API")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument(
        "--access-log", action="store_true", help="log every request (/metrics counts them anyway)"
    )
    commands.add_parser("secret", help="print the default webhook secret from Replicate's API")
    test = commands.add_parser("send-test", help="post a signed sample prediction to --url")
    test.add_argument("--url", required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port, args.access_log)
    elif args.command == "secret":
        settings = load_settings()
        if settings.replicate_api_token is None:
            fail("set REPLICATE_API_TOKEN to fetch the webhook secret")
        print(secrets(settings)[0])
    else:
        send_test(args.url)


if __name__ == "__main__":
    main()
