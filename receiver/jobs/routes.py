"""The jobs API, behind the read API's bearer token: upload a job, follow it, cancel it, and
read its results chunk by chunk (ids as JSON, vectors as the downloaded npy file)."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import FileResponse, JSONResponse

from receiver.context import AppContext, Context, RefusedError
from receiver.file_response import stored_attachment
from receiver.jobs.items import MAX_CHUNK_TEXTS, Chunk, ChunkCutter, InputError, LineChecker
from receiver.jobs.runner import UPLOAD_IDLE_SECONDS, cancel_quietly
from receiver.jobs.store import UploadGoneError
from receiver.replicate_api import Replicate
from receiver.routes import reader
from receiver.store import iso

log = logging.getLogger("receiver")
DEPLOYMENT = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}/[a-z0-9][a-z0-9_.-]{0,127}")
JOB_ID = re.compile(r"job_[0-9a-f]{16}")
CHUNKS_PER_TRANSACTION = 16
# A live upload says so this often, stored chunks or not, so the sweep (UPLOAD_IDLE_SECONDS of
# silence) takes only those whose receiver died.
UPLOAD_TOUCH_SECONDS = UPLOAD_IDLE_SECONDS / 10
MAX_LINE_BYTES = (2 << 20) * 6 + 1024  # a 2 MiB text, every character escaped as \uXXXX

job_routes = APIRouter(prefix="/jobs", dependencies=[Depends(reader)])


def _job_view(job: dict[str, Any]) -> dict[str, Any]:
    view = {**job, "created_at": iso(job["created_at"])}
    del view["updated_at"]  # the upload sweep's, not the user's
    view["finished_at"] = iso(job["finished_at"]) if job["finished_at"] else None
    return view


def _job_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise RefusedError(404, "no such job")
    return job_id


def _runs_jobs(ctx: AppContext) -> Replicate:
    """Replicate's API, as this receiver calls it for jobs; refused if it runs none."""
    if ctx.settings.receiver_public_url is None or ctx.replicate is None:
        raise RefusedError(
            409,
            "this receiver runs no jobs: set RECEIVER_PUBLIC_URL (where Replicate reaches it)"
            " and REPLICATE_API_TOKEN",
        )
    return ctx.replicate


async def _check_deployment(replicate: Replicate, deployment: str) -> None:
    """A deployment Replicate does not know is refused before the upload; if Replicate cannot
    say, the job is taken (its chunks then fail with Replicate's own reason, if any)."""
    try:
        exists = await asyncio.to_thread(replicate.deployment_exists, deployment)
    except Exception as exc:
        log.warning("cannot check deployment %s on Replicate: %s", deployment, exc)
        return
    if not exists:
        raise RefusedError(422, f"Replicate has no deployment {deployment} for this token")


def _too_big(limit: int) -> RefusedError:
    return RefusedError(413, f"job body over {limit} bytes (RECEIVER_MAX_JOB_BYTES)")


def _check_declared_size(request: Request, limit: int) -> None:
    """A declared length over the limit is refused before a byte is read; an undeclared
    (chunked) body is counted as it arrives."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_big(limit)


async def _lines(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's lines as they arrive; refused past `limit` bytes in all or a line too long."""
    pending: list[bytes] = []  # the pieces of the line not ended yet
    pending_size = 0
    received = 0
    lines = 0
    async for piece in request.stream():
        received += len(piece)
        if received > limit:
            raise _too_big(limit)
        *ended, rest = piece.split(b"\n")
        for end in ended:
            yield b"".join([*pending, end])
            lines += 1
            pending = []
            pending_size = 0
        pending.append(rest)
        pending_size += len(rest)
        if pending_size > MAX_LINE_BYTES:
            raise RefusedError(413, f"line {lines + 1}: longer than {MAX_LINE_BYTES} bytes")
    if pending_size:
        yield b"".join(pending)


async def _store_upload(
    ctx: AppContext, job_id: str, request: Request, chunk_size: int, normalize: bool
) -> tuple[int, int]:
    """Check and store every line; (texts, chunks). Chunks go in a few at a time, so a large
    upload does not hold the store's write lock for long."""
    checker = LineChecker(jsonl=True)
    cutter = ChunkCutter(chunk_size)
    batch: list[Chunk] = []
    stored_at = ctx.clock()
    async for line in _lines(request, ctx.settings.receiver_max_job_bytes):
        batch += cutter.add(checker.check(line))
        if len(batch) >= CHUNKS_PER_TRANSACTION:
            await asyncio.to_thread(
                ctx.store.jobs.add_chunks, job_id, normalize, batch, ctx.clock()
            )
            batch = []
            stored_at = ctx.clock()
        elif ctx.clock() - stored_at >= UPLOAD_TOUCH_SECONDS:  # slow, not dead: not to be swept
            await asyncio.to_thread(ctx.store.jobs.touch, job_id, ctx.clock())
            stored_at = ctx.clock()
    checker.finish()
    batch += cutter.end()
    if batch:
        await asyncio.to_thread(ctx.store.jobs.add_chunks, job_id, normalize, batch, ctx.clock())
    return cutter.texts, cutter.chunks


@job_routes.post("", status_code=201)
async def submit(
    request: Request,
    ctx: Context,
    deployment: Annotated[str, Query(max_length=200)],
    chunk_size: Annotated[int, Query(ge=1, le=MAX_CHUNK_TEXTS)] = MAX_CHUNK_TEXTS,
    normalize: bool = True,
) -> dict[str, Any]:
    """A job from a JSONL body; every line is checked before any prediction can start."""
    replicate = _runs_jobs(ctx)
    if not DEPLOYMENT.fullmatch(deployment):
        raise RefusedError(422, "deployment must be owner/name (lower-case letters, digits, -_.)")
    _check_declared_size(request, ctx.settings.receiver_max_job_bytes)
    await _check_deployment(replicate, deployment)
    job_id = f"job_{secrets.token_hex(8)}"
    store = ctx.store.jobs
    await asyncio.to_thread(store.create, job_id, deployment, normalize, ctx.clock())
    try:
        texts, count = await _store_upload(ctx, job_id, request, chunk_size, normalize)
        started = await asyncio.to_thread(store.start, job_id, texts, count)
    except InputError as exc:
        await asyncio.to_thread(store.discard, job_id)
        raise RefusedError(422, str(exc)) from exc
    except UploadGoneError as exc:
        await asyncio.to_thread(store.discard, job_id)
        raise RefusedError(409, str(exc)) from exc
    except BaseException:  # refused, the client gone, the store down: nothing half stored
        await asyncio.shield(asyncio.to_thread(store.discard, job_id))
        raise
    if not started:
        await asyncio.to_thread(store.discard, job_id)
        raise RefusedError(409, f"job {job_id} was canceled while it was uploaded")
    log.info("job %s: %d texts in %d chunks on %s", job_id, texts, count, deployment)
    return {"id": job_id, "texts": texts, "chunks": count, "deployment": deployment}


def shown_jobs(ctx: AppContext, limit: int) -> list[dict[str, Any]]:
    """The newest jobs with their progress."""
    return [_job_view(job) for job in ctx.store.jobs.jobs(limit, ctx.clock())]


@job_routes.get("")
def list_jobs(ctx: Context, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    return {"items": shown_jobs(ctx, limit)}


def shown_job(ctx: AppContext, job_id: str) -> dict[str, Any]:
    """A job with its progress, as the API and the console show it; 404 if there is none."""
    found = ctx.store.jobs.job(_job_id(job_id), ctx.clock())
    if found is None:
        raise RefusedError(404, "no such job")
    return _job_view(found)


def cancel(ctx: AppContext, job_id: str) -> dict[str, Any]:
    """Queued chunks never start; running predictions are asked to stop (their results, if
    they come, are kept out of the job)."""
    shown_job(ctx, job_id)
    for prediction_id in ctx.store.jobs.cancel(job_id, ctx.clock()):
        if ctx.replicate is not None:
            cancel_quietly(ctx.replicate, prediction_id)
    return shown_job(ctx, job_id)


@job_routes.get("/{job_id}")
def get_job(job_id: str, ctx: Context) -> dict[str, Any]:
    return shown_job(ctx, job_id)


@job_routes.post("/{job_id}/cancel")
def cancel_job(job_id: str, ctx: Context) -> dict[str, Any]:
    return cancel(ctx, job_id)


ChunkNumber = Annotated[int, FastApiPath(ge=0, le=10_000_000)]


def _chunk(job_id: str, n: int, ctx: AppContext) -> dict[str, Any]:
    chunk = ctx.store.jobs.chunk(_job_id(job_id), n)
    if chunk is None:
        raise RefusedError(404, "no such chunk")
    return chunk


@job_routes.get("/{job_id}/chunks/{n}")
def get_chunk(job_id: str, n: ChunkNumber, ctx: Context) -> JSONResponse:
    chunk = _chunk(job_id, n, ctx)
    keys = ("n", "first", "count", "state", "attempts", "prediction_id", "error", "ids")
    return JSONResponse({key: chunk[key] for key in keys})


@job_routes.get("/{job_id}/chunks/{n}/vectors")
def get_vectors(job_id: str, n: ChunkNumber, ctx: Context) -> FileResponse:
    chunk = _chunk(job_id, n, ctx)
    if chunk["state"] != "done" or not chunk["path"]:
        raise RefusedError(409, f"chunk not done (state: {chunk['state']})")
    return stored_attachment(chunk["path"], "application/x-npy")
