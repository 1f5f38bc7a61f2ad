"""Start-up checks of `python -m receiver serve`: every wrong setting is one line naming it
(exit 2, never a traceback, never a password), and `secret --generate`."""

from __future__ import annotations

import re
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from localcog import REPO
from receiver.settings import Settings
from receiver.signature import decode_secret
from standin.local import receiver_process
from tests.support.commands import CLEAN_ENV, run_receiver
from tests.support.receiving import SECRET


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("receiver: ")
    return lines[0]


def serve(tmp_path: Path, *args: str, **env: str) -> str:
    """Start with `env` on top of a valid configuration; return the refusal line."""
    base = {
        "REPLICATE_WEBHOOK_SECRET": SECRET,
        "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "RECEIVER_OUTPUT_DIR": str(tmp_path / "out"),
    }
    return one_line(run_receiver("serve", "--port", "9", *args, **{**base, **env}))


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://app:hunter2@db.example/app", "unsupported database 'mysql'"),
        ("mysql+pymysql://app:hunter2@db.example/app", "unsupported database 'mysql'"),
        ("postgresql+psycopg2://app:hunter2@db.example/app", "unsupported driver"),
        ("postgresql://app:hunter2@db.example:port/app", "not a database URL"),
        ("hunter2", "not a database URL"),
        ("sqlite:///:memory:", "in-memory SQLite database cannot be shared"),
        ("sqlite://", "in-memory SQLite database cannot be shared"),
    ],
)
def test_unsupported_or_malformed_database_urls(url: str, words: str, tmp_path: Path) -> None:
    line = serve(tmp_path, RECEIVER_DATABASE_URL=url)
    assert line.startswith("receiver: invalid setting RECEIVER_DATABASE_URL: ")
    assert words in line
    assert "hunter2" not in line


def test_an_unreachable_database_is_named_without_its_password(tmp_path: Path) -> None:
    url = "postgresql://postgres:hunter2@127.0.0.1:1/x?connect_timeout=2"
    line = serve(tmp_path, RECEIVER_DATABASE_URL=url)
    assert line == (
        "receiver: store postgresql://postgres:***@127.0.0.1:1/x?connect_timeout=2 "
        "unavailable: Connection refused"
    )


def test_a_missing_database_says_so(tmp_path: Path) -> None:
    name = f"receiver_missing_{uuid.uuid4().hex[:8]}"
    line = serve(tmp_path, RECEIVER_DATABASE_URL=f"postgresql://postgres:pw@127.0.0.1/{name}")
    assert line == (
        f"receiver: store postgresql://postgres:***@127.0.0.1/{name} "
        f'unavailable: database "{name}" does not exist'
    )


def test_an_unwritable_output_dir_is_refused_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # root can write anywhere, but not under a file
    line = serve(tmp_path, RECEIVER_OUTPUT_DIR=str(blocker / "outputs"))
    assert line == (
        f"receiver: invalid setting RECEIVER_OUTPUT_DIR: '{blocker / 'outputs'}' is not "
        "writable (Not a directory)"
    )


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("ftp://files.example", "only http:// or https:// origins"),
        ("http://", "has no host"),
        ("https://:8443", "has no host"),
        ("https://user:pw@files.example", "has no host"),
        ("https://files.example/outputs", "an origin has no path, query or fragment"),
        ("https://files.example?x=1", "an origin has no path, query or fragment"),
        ("http://127.0.0.1:99999", "is not a valid origin"),
        ("files.example/outputs", "is not a host name"),
        ("files.example:443", "is not a host name"),
        ("*.example", "is not a host name"),
    ],
)
def test_malformed_download_hosts_are_refused(entry: str, words: str, tmp_path: Path) -> None:
    line = serve(tmp_path, RECEIVER_DOWNLOAD_HOSTS=f"replicate.delivery {entry}")
    assert line.startswith(f"receiver: invalid setting RECEIVER_DOWNLOAD_HOSTS: entry {entry!r}")
    assert words in line


def test_download_hosts_are_compared_in_lower_case() -> None:
    hosts = "Replicate.Delivery. http://127.0.0.1:9000"
    settings = Settings(receiver_download_hosts=hosts)
    assert settings.receiver_download_hosts == ["replicate.delivery", "http://127.0.0.1:9000"]


@pytest.mark.parametrize("entry", ["*", "proxy.internal", "10.0.0.1/8", "10.0.0.300"])
def test_only_addresses_may_be_trusted_for_forwarded_headers(entry: str, tmp_path: Path) -> None:
    line = serve(tmp_path, RECEIVER_FORWARDED_ALLOW_IPS=f"127.0.0.1,{entry}")
    assert line == (
        f"receiver: invalid setting RECEIVER_FORWARDED_ALLOW_IPS: entry {entry!r} is not an IP "
        "address or network: trust only your proxy's address"
    )
    flag = serve(tmp_path, "--forwarded-allow-ips", entry)
    assert flag.startswith(f"receiver: invalid --forwarded-allow-ips: entry {entry!r}")


@pytest.mark.parametrize("entry", ["0.0.0.0/0", "::/0"])
def test_trusting_every_address_is_refused(entry: str, tmp_path: Path) -> None:
    line = serve(tmp_path, RECEIVER_FORWARDED_ALLOW_IPS=entry)
    assert line == (
        f"receiver: invalid setting RECEIVER_FORWARDED_ALLOW_IPS: entry {entry!r} is every "
        "address: trust only your proxy's address"
    )


def test_an_empty_variable_counts_as_unset() -> None:
    """compose's `${REPLICATE_API_TOKEN:-}` must not become an empty token."""
    line = one_line(run_receiver("secret", REPLICATE_API_TOKEN=""))
    assert "set REPLICATE_API_TOKEN to fetch the webhook secret" in line


def test_generated_secrets_are_fresh_and_accepted(tmp_path: Path) -> None:
    first, second = (run_receiver("secret", "--generate") for _ in range(2))
    assert (first.returncode, second.returncode, first.stderr) == (0, 0, "")
    secret = first.stdout.strip()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
    assert len(decode_secret(secret)) == 32
    assert secret != second.stdout.strip()
    env = {
        **CLEAN_ENV,
        "REPLICATE_WEBHOOK_SECRET": secret,
        "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "RECEIVER_OUTPUT_DIR": str(tmp_path / "out"),
    }
    with receiver_process(env, tmp_path / "receiver.log") as receiver:
        url = f"{receiver.url}/webhooks/replicate"
        sent = run_receiver("send-test", "--url", url, REPLICATE_WEBHOOK_SECRET=secret)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith('200 {"status":"accepted"')


def test_the_readme_documents_every_setting() -> None:
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)`(?:, `([A-Z_]+)`)?", readme, re.MULTILINE))
    names = {name for row in documented for name in row if name}
    assert {field.upper() for field in Settings.model_fields} <= names


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_receiver(
            "serve",
            "--port",
            str(port),
            REPLICATE_WEBHOOK_SECRET=SECRET,
            RECEIVER_DATABASE_URL=f"sqlite:///{tmp_path / 'r.db'}",
            RECEIVER_OUTPUT_DIR=str(tmp_path / "out"),
        )
    assert (
        one_line(result) == f"receiver: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert not (tmp_path / "r.db").exists()  # refused before the store was opened
