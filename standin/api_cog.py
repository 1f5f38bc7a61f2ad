"""Routes Replicate does not have, for Cog to talk back: its webhooks and its file uploads.

They sit outside /v1 and need no API token, as Cog knows none. Uploaded files are served again
from `GET /files/{key}/{name}`, as replicate.delivery serves a prediction's output files, for
an hour (`output_retention_seconds`, from the upload, close to the prediction's end).
"""

from __future__ import annotations

import mimetypes
import uuid

from fastapi import APIRouter, Request, Response

from standin.api_common import Dispatch, Memory, json_body
from standin.memory import not_found

router = APIRouter()


@router.post("/_cog/{prediction_id}")
async def from_cog(dispatcher: Dispatch, prediction_id: str, request: Request) -> Response:
    update = await json_body(request)
    if isinstance(update, dict):
        dispatcher.from_cog(prediction_id, update)
    return Response(status_code=200)


@router.put("/_uploads/{name}")
async def upload(memory: Memory, name: str, request: Request) -> Response:
    key = uuid.uuid4().hex
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    memory.files[key] = (await request.body(), content_type)
    memory.uploaded_at[key] = memory.clock()
    location = f"{memory.base_url}/files/{key}/{name}"
    return Response(status_code=201, headers={"Location": location})


@router.get("/files/{key}/{name}")
def download(memory: Memory, key: str, name: str) -> Response:
    expired = memory.uploaded_at.get(key, 0) + memory.output_retention_seconds < memory.clock()
    if key not in memory.files or expired:  # Replicate deletes outputs after an hour
        raise not_found("File")
    content, content_type = memory.files[key]
    return Response(content, media_type=content_type)
