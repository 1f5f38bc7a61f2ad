"""The console's jobs pages: every job's progress, one job's chunks and failures, cancel, and a
finished job's results as one Parquet file."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from receiver.context import Context, RefusedError
from receiver.jobs.results import ResultsError
from receiver.jobs.routes import cancel, shown_job, shown_jobs
from receiver.ui.job_results import parquet_results, remove_results
from receiver.ui.pages import (
    SECURITY_HEADERS,
    Signed,
    check_csrf,
    read_form,
    see_other,
    signed_page,
)

JOBS_SHOWN = 100
OPEN_JOB_STATES = ("uploading", "running")

ui_job_routes = APIRouter(prefix="/ui/jobs")


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def _job_view(job: dict[str, Any]) -> dict[str, Any]:
    return {
        **job,
        "ended": job["done_texts"] + job["failed_texts"] + job["canceled_texts"],
        "eta": _eta(job["eta_seconds"]),
        "open": job["state"] in OPEN_JOB_STATES,
    }


@ui_job_routes.get("/")
async def jobs_page(request: Request, ctx: Context, signed: Signed) -> Response:
    jobs = [_job_view(job) for job in await asyncio.to_thread(shown_jobs, ctx, JOBS_SHOWN)]
    return await signed_page(
        request,
        ctx,
        signed,
        "jobs.html",
        jobs=jobs,
        running=any(job["open"] for job in jobs),
    )


@ui_job_routes.get("/{job_id}")
async def job_page(job_id: str, request: Request, ctx: Context, signed: Signed) -> Response:
    try:
        job = _job_view(await asyncio.to_thread(shown_job, ctx, job_id))
    except RefusedError:  # no such job, or not a job id at all
        return await signed_page(
            request, ctx, signed, "missing.html", code=404, kind="job", what=job_id
        )
    return await signed_page(request, ctx, signed, "job.html", job=job, running=job["open"])


@ui_job_routes.get("/{job_id}/results.parquet")
async def job_results(job_id: str, ctx: Context, signed: Signed) -> FileResponse:
    job = await asyncio.to_thread(shown_job, ctx, job_id)
    if job["state"] in OPEN_JOB_STATES:
        raise RefusedError(409, f"job {job_id} is {job['state']}: its results come at its end")
    try:
        output = await asyncio.to_thread(parquet_results, ctx.store.jobs, job)
    except ResultsError as exc:
        raise RefusedError(409, f"the results cannot be written: {exc}") from exc
    return FileResponse(
        output,
        media_type="application/vnd.apache.parquet",
        filename=output.name,
        content_disposition_type="attachment",
        headers=SECURITY_HEADERS,
        background=BackgroundTask(remove_results, output),
    )


@ui_job_routes.post("/{job_id}/cancel")
async def cancel_job(job_id: str, request: Request, ctx: Context, signed: Signed) -> Response:
    check_csrf(signed, await read_form(request))
    await asyncio.to_thread(cancel, ctx, job_id)
    return see_other(f"/ui/jobs/{job_id}")
