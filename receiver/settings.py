"""Configuration from the environment; refuse to start on what would weaken verification."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from receiver.signature import decode_secret
from receiver.store import DEFAULT_MAX_FILES

_SPLIT = re.compile(r"[\s,]+")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)
# The drivers this package installs; anything else would fail later with an import traceback.
DATABASES = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg"), "postgres": ("",)}
DATABASE_EXAMPLE = "sqlite:///path/to/receiver.db or postgresql://user:password@host/db"


class SettingsError(Exception):
    """A configuration the receiver must not start with; the message is one readable line."""


def _split(value: object) -> object:
    return [item for item in _SPLIT.split(value) if item] if isinstance(value, str) else value


def check_database_url(url: str) -> str:
    """Only SQLite and PostgreSQL through the drivers we ship; the URL is never echoed (it may
    hold a password)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(f"not a database URL (use {DATABASE_EXAMPLE})") from exc
    drivername = parsed.drivername
    backend, _, driver = drivername.partition("+")
    if backend not in DATABASES:
        raise ValueError(f"unsupported database {backend!r} (use {DATABASE_EXAMPLE})")
    if driver not in DATABASES[backend]:
        raise ValueError(f"unsupported driver {drivername!r} (use {backend}:// without +driver)")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        # The writer process opens the store on its own: an in-memory database would be a
        # second, empty one, and every delivery would vanish with it.
        raise ValueError(f"an in-memory SQLite database cannot be shared (use {DATABASE_EXAMPLE})")
    return url


def check_download_host(entry: str) -> str:
    """A bare host (https on it and its subdomains) or exactly one http(s) origin, nothing else:
    a typo here would silently refuse every file, or allow more than meant."""
    if "://" not in entry:
        host = entry.lower().rstrip(".")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"entry {entry!r} is not a host name (example: replicate.delivery)")
        return host
    try:
        parts = urlsplit(entry)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        raise ValueError(f"entry {entry!r} is not a valid origin") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"entry {entry!r}: only http:// or https:// origins")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ValueError(f"entry {entry!r} has no host (example: http://127.0.0.1:9000)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"entry {entry!r}: an origin has no path, query or fragment")
    return entry


def check_trusted_proxy(entry: str) -> str:
    """An IP address or network; uvicorn would treat anything else as a literal name, and `*`
    would let any client claim any address."""
    try:
        network = ipaddress.ip_network(entry)  # strict: 10.0.0.1/8 is refused, not widened
    except ValueError as exc:
        raise ValueError(
            f"entry {entry!r} is not an IP address or network: trust only your proxy's address"
        ) from exc
    if network.prefixlen == 0:
        raise ValueError(f"entry {entry!r} is every address: trust only your proxy's address")
    return entry


def check_public_url(url: str) -> str:
    """The receiver's own origin as Replicate reaches it (the webhook URL is built on it):
    http(s), a host, no query or fragment; a trailing slash is dropped."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL (example: https://receiver.example.com)") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL (example: https://receiver.example.com)")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: no query or fragment")
    return url.rstrip("/")


class Settings(BaseSettings):
    """Every setting is named exactly as its environment variable; an empty one counts as unset
    (compose's `${VAR:-}` gives empty strings)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", env_ignore_empty=True)

    replicate_webhook_secret: SecretStr | None = None
    replicate_api_token: SecretStr | None = None
    replicate_base_url: str | None = None
    receiver_database_url: str = "sqlite:///./data/receiver.db"
    receiver_api_token: SecretStr | None = None
    receiver_output_dir: Path = Path("./data/outputs")
    receiver_tolerance_seconds: int = Field(300, ge=1)
    receiver_max_body_bytes: int = Field(32 << 20, ge=1024)
    receiver_max_bytes_in_flight: int = Field(128 << 20, ge=1024)
    receiver_body_timeout_seconds: float = Field(30, gt=0)
    receiver_header_timeout_seconds: float = Field(10, gt=0)
    receiver_max_connections: int = Field(1000, ge=2)
    receiver_store_timeout_seconds: float = Field(10, gt=0)
    receiver_download_hosts: Annotated[list[str], NoDecode] = ["replicate.delivery"]
    receiver_download_max_attempts: int = Field(8, ge=1)
    receiver_download_max_bytes: int = Field(64 << 20, ge=1)
    receiver_download_timeout_seconds: float = Field(300, gt=0)
    receiver_download_concurrency: int = Field(16, ge=1, le=256)
    receiver_download_yield_above: float = Field(100, ge=0)  # webhooks/s; 0: never yield
    receiver_max_files_per_prediction: int = Field(DEFAULT_MAX_FILES, ge=1)
    receiver_reconcile_after_seconds: float = Field(120, gt=0)
    receiver_reconcile_interval_seconds: float = Field(30, gt=0)
    receiver_worker_poll_seconds: float = Field(1.0, gt=0)
    receiver_forwarded_allow_ips: Annotated[list[str], NoDecode] = []
    # Corpus jobs (receiver/jobs): where Replicate reaches this receiver, and how hard to push.
    receiver_public_url: str | None = None
    receiver_job_max_attempts: int = Field(3, ge=1, le=20)
    receiver_job_rate_per_minute: int = Field(600, ge=20)
    receiver_job_poll_seconds: float = Field(1.0, gt=0)
    receiver_job_claim_seconds: float = Field(120, ge=4)
    receiver_job_max_in_flight: int = Field(100, ge=1)
    receiver_max_job_bytes: int = Field(1 << 30, ge=1024)

    _split_lists = field_validator(
        "receiver_download_hosts", "receiver_forwarded_allow_ips", mode="before"
    )(_split)

    @field_validator("receiver_database_url")
    @classmethod
    def _database(cls, url: str) -> str:
        return check_database_url(url)

    @field_validator("receiver_download_hosts")
    @classmethod
    def _hosts(cls, entries: list[str]) -> list[str]:
        return [check_download_host(entry) for entry in entries]

    @field_validator("receiver_public_url")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        return None if url is None else check_public_url(url)

    @field_validator("receiver_forwarded_allow_ips")
    @classmethod
    def _proxies(cls, entries: list[str]) -> list[str]:
        return [check_trusted_proxy(entry) for entry in entries]

    @model_validator(mode="after")
    def _budget_holds_a_body(self) -> Settings:
        if self.receiver_max_bytes_in_flight < self.receiver_max_body_bytes:
            raise ValueError(
                "RECEIVER_MAX_BYTES_IN_FLIGHT is below RECEIVER_MAX_BODY_BYTES: "
                "no body of the largest size could ever be received"
            )
        return self

    def secrets(self) -> list[str]:
        secret = self.replicate_webhook_secret
        raw = secret.get_secret_value() if secret else ""
        return [item for item in _SPLIT.split(raw) if item]


def signing_keys(secrets: list[str]) -> list[bytes]:
    """Decode every configured secret, or say which one is wrong (by position, never its value)."""
    if not secrets:
        raise SettingsError(
            "no webhook secret: set REPLICATE_WEBHOOK_SECRET=whsec_... "
            "(or REPLICATE_API_TOKEN to fetch it from Replicate)"
        )
    keys = []
    for position, secret in enumerate(secrets, start=1):
        try:
            keys.append(decode_secret(secret))
        except ValueError as exc:
            raise SettingsError(f"REPLICATE_WEBHOOK_SECRET entry {position}: {exc}") from exc
    return keys
