"""Fetch every output file of a terminal prediction before Replicate deletes it (one hour).

Jobs live in the `files` table, so the queue survives restarts and is shared by every receiver
process: a job is claimed under a lease (SKIP LOCKED on PostgreSQL), written to a temporary file,
checked, then moved into place under a name derived only from safe characters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import random
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

import httpx

from receiver.rules import host_allowed
from receiver.settings import Settings
from receiver.store import Job, Store, StoredFile

LEASE_SECONDS = 600.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class DownloadError(Exception):
    """This attempt failed; the job is retried later or dead-lettered."""


class TooLargeError(DownloadError):
    """The file is over the size cap: fetching it again would not change that."""


def safe_name(text: str, fallback: str) -> str:
    """A single path component of safe characters: no separators, no leading dots."""
    name = _UNSAFE.sub("_", text).lstrip(".")[:100]
    return name or fallback


def backoff(attempts: int, base: float = 2.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter: retries from many receivers do not align."""
    return random.uniform(0.5, 1.5) * min(cap, base * 2.0 ** (attempts - 1))


def _data_uri(url: str) -> tuple[bytes, str]:
    header, _, data = url[len("data:") :].partition(",")
    media_type, *params = header.split(";")
    try:
        raw = (
            base64.b64decode(data, validate=True) if "base64" in params else unquote_to_bytes(data)
        )
    except binascii.Error as exc:
        raise DownloadError("data URI is not valid base64") from exc
    return raw, content_type_of(media_type)


def prediction_folder(root: Path, prediction_id: str) -> Path:
    """One folder per prediction, whatever its id: a readable prefix, then a digest of the
    whole id, so ids that sanitise alike (`a?b`, `a#b`, long shared prefixes) never share."""
    digest = hashlib.sha256(prediction_id.encode()).hexdigest()[:16]
    return root / f"{safe_name(prediction_id, 'prediction')[:64]}-{digest}"


def content_type_of(header: str | None) -> str:
    """The served content type as recorded: printable ASCII that fits the column, or the
    generic type (it is advisory; the read API never trusts it anyway)."""
    if header and len(header) <= 255 and header.isascii() and header.isprintable():
        return header
    return "application/octet-stream"


def target(root: Path, job: Job, content_type: str) -> Path:
    folder = prediction_folder(root, job.prediction_id)
    if job.url.startswith("data:"):
        name = f"{job.n}{mimetypes.guess_extension(content_type) or '.bin'}"
    else:
        name = f"{job.n}-{safe_name(Path(urlsplit(job.url).path).name, 'file')}"
    path = (folder / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DownloadError("unsafe file name")  # cannot happen with safe_name; belt and braces
    return path


def fetch(
    job: Job, root: Path, hosts: list[str], client: httpx.Client, max_bytes: int
) -> StoredFile:
    """Store one file under `root`; say where, and what it holds."""
    if not host_allowed(job.url, hosts):
        raise DownloadError("host not in RECEIVER_DOWNLOAD_HOSTS")
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    too_large = TooLargeError(f"file over RECEIVER_DOWNLOAD_MAX_BYTES ({max_bytes} bytes)")
    with tempfile.NamedTemporaryFile(dir=root, prefix=".partial-", delete=False) as tmp:
        try:
            if job.url.startswith("data:"):
                data, content_type = _data_uri(job.url)
                if len(data) > max_bytes:
                    raise too_large
                tmp.write(data)
                digest.update(data)
                size = len(data)
            else:
                with client.stream("GET", job.url) as response:
                    if response.status_code != 200:
                        raise DownloadError(f"HTTP {response.status_code} from {job.url}")
                    content_type = content_type_of(response.headers.get("content-type"))
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise too_large
                        tmp.write(chunk)
                        digest.update(chunk)
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    path = target(root, job, content_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(tmp.name).replace(path)
    return StoredFile(str(path), digest.hexdigest(), size, content_type)


class Downloader:
    """One step of the download worker: claim a due job and settle it."""

    def __init__(
        self, store: Store, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        # Redirects are not followed: a hop could leave the allow-list.
        self.client = httpx.Client(
            timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=False
        )

    def step(self) -> bool:
        settings = self.settings
        max_attempts = settings.receiver_download_max_attempts
        job = self.store.claim(self.clock(), LEASE_SECONDS, max_attempts)
        if job is None:
            return False
        hosts = settings.receiver_download_hosts
        try:
            stored = fetch(
                job,
                settings.receiver_output_dir,
                hosts,
                self.client,
                settings.receiver_download_max_bytes,
            )
        except Exception as exc:  # any failure is an attempt: none may leave the job running
            self._failed(job, exc)
            return True
        self.store.finish(job, stored)
        return True

    def _failed(self, job: Job, exc: Exception) -> None:
        """Retry after a backoff, or dead-letter: at the attempt limit, or when retrying
        cannot help (a file over the size cap)."""
        last = job.attempts >= self.settings.receiver_download_max_attempts
        if last or isinstance(exc, TooLargeError):
            retry_at = None
        else:
            retry_at = self.clock() + backoff(job.attempts)
        reason = str(exc) if isinstance(exc, DownloadError) else f"{type(exc).__name__}: {exc}"
        self.store.retry_or_bury(job, reason[:500], retry_at)
