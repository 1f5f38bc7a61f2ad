"""How a stored file leaves the receiver: as a download no browser renders.

The content type of a file came from whoever served it (or from a `data:` URI in a signed
body), so it is not trusted: only types a browser does not execute pass through, anything else
(text/html, SVG, XML, scripts, non-Latin-1 junk a header cannot carry) is served as
`application/octet-stream`. Every file is an attachment, with `nosniff` and a sandboxing CSP as
a second fence, so a stored page can never run in the receiver's origin.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.responses import FileResponse

from receiver import rules
from receiver.context import RefusedError
from receiver.store import Store

FALLBACK = "application/octet-stream"
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,126}/[a-z0-9][a-z0-9.+-]{0,126}")
# Passed through as they are: data and media a browser only ever downloads or plays.
_PASSED_THROUGH = frozenset(
    {
        "application/octet-stream",
        "application/x-npy",
        "application/json",
        "application/x-ndjson",
        "application/zip",
        "application/gzip",
        "text/plain",
        "text/csv",
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/gif",
        "audio/mpeg",
        "audio/wav",
        "video/mp4",
        "video/webm",
    }
)
_HEADERS = {"x-content-type-options": "nosniff", "content-security-policy": "sandbox"}


def safe_media_type(stored: str | None) -> str:
    """The stored type without parameters if it is one a browser will not execute."""
    media_type = (stored or "").split(";", 1)[0].strip().lower()
    if _MEDIA_TYPE.fullmatch(media_type) and media_type in _PASSED_THROUGH:
        return media_type
    return FALLBACK


def prediction_file(store: Store, prediction_id: str, n: int) -> FileResponse:
    """A prediction's file `n` as stored, or the refusal that says why not (for the read API
    and the console alike)."""
    row = store.file(prediction_id, n) if rules.valid_id(prediction_id) else None
    if row is None:
        raise RefusedError(404, "no such file")
    if row["state"] != "done" or not row["path"]:
        raise RefusedError(409, f"file not stored yet (state: {row['state']})")
    return stored_attachment(row["path"], row["content_type"])


def stored_attachment(path: str, stored_type: str | None) -> FileResponse:
    """A downloaded file as an attachment, or 410 if it was stored but is gone from disk."""
    if not Path(path).is_file():
        raise RefusedError(410, "file was stored but is no longer on disk")
    return attachment(Path(path), stored_type)


def attachment(path: Path, stored_type: str | None) -> FileResponse:
    """The file as a download named as on disk (safe characters only, see downloads.py)."""
    return FileResponse(
        path,
        media_type=safe_media_type(stored_type),
        filename=path.name,
        content_disposition_type="attachment",
        headers=_HEADERS,
    )
