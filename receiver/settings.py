"""Configuration from the environment; refuse to start on what would weaken verification."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from receiver.signature import decode_secret

_SPLIT = re.compile(r"[\s,]+")


class SettingsError(Exception):
    """A configuration the receiver must not start with; the message is one readable line."""


def _split(value: object) -> object:
    return [item for item in _SPLIT.split(value) if item] if isinstance(value, str) else value


class Settings(BaseSettings):
    """Every setting is named exactly as its environment variable."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    replicate_webhook_secret: SecretStr | None = None
    replicate_api_token: SecretStr | None = None
    replicate_base_url: str | None = None
    receiver_database_url: str = "sqlite:///./data/receiver.db"
    receiver_api_token: SecretStr | None = None
    receiver_output_dir: Path = Path("./data/outputs")
    receiver_tolerance_seconds: int = Field(300, ge=1)
    receiver_max_body_bytes: int = Field(32 << 20, ge=1024)
    receiver_download_hosts: Annotated[list[str], NoDecode] = ["replicate.delivery"]
    receiver_download_max_attempts: int = Field(8, ge=1)
    receiver_reconcile_after_seconds: float = Field(120, gt=0)
    receiver_reconcile_interval_seconds: float = Field(30, gt=0)
    receiver_worker_poll_seconds: float = Field(1.0, gt=0)

    _split_hosts = field_validator("receiver_download_hosts", mode="before")(_split)

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
