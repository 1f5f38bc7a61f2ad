"""`python -m receiver jobs submit | list | watch | cancel | results`: a job from the shell.

Talks to a running receiver at RECEIVER_URL (or --url) with RECEIVER_API_TOKEN, as `make
smoke` does. Every failure is a `CliError`: one line, and `python -m receiver` exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from receiver.jobs.items import MAX_CHUNK_TEXTS, InputError, as_jsonl, read_file
from receiver.jobs.results import ResultsError, chunk_results, errors_path, ids_path, write

UPLOAD_TIMEOUT = httpx.Timeout(30, read=600)  # the receiver answers once every line is stored


class CliError(Exception):
    """What went wrong, in one line for the user."""


def add_parser(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="embed a dataset through a deployment (corpus jobs)")
    jobs.add_argument("--url", help="the receiver (default: RECEIVER_URL)")
    verbs = jobs.add_subparsers(dest="verb", required=True)
    submit = verbs.add_parser("submit", help="check FILE and upload it as a job; print its id")
    submit.add_argument("file", type=Path, help="JSONL ({'id', 'text'} a line) or one text a line")
    submit.add_argument("--deployment", required=True, metavar="OWNER/NAME")
    submit.add_argument("--chunk-size", type=int, default=MAX_CHUNK_TEXTS, metavar="N")
    submit.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True)
    verbs.add_parser("list", help="the latest jobs")
    watch = verbs.add_parser("watch", help="a progress bar until the job ends")
    watch.add_argument("id")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between looks")
    cancel = verbs.add_parser("cancel", help="cancel what is queued and running")
    cancel.add_argument("id")
    results = verbs.add_parser("results", help="write the vectors in input order")
    results.add_argument("id")
    results.add_argument(
        "--output", type=Path, required=True, help="FILE.parquet, or FILE.npy (+ FILE.ids.jsonl)"
    )
    results.add_argument("--errors", type=Path, help="failed ids (default: FILE.errors.jsonl)")


def run(args: argparse.Namespace) -> int:
    """Run one verb; the exit status (1: the job did not end well). A file that cannot be
    written, or one that changed while it was uploaded, is one line too."""
    try:
        return _run(args)
    except InputError as exc:
        raise CliError(f"{args.file}: changed while it was uploaded: {exc}") from exc
    except OSError as exc:
        raise CliError(f"{exc.filename or 'file'}: {exc.strerror or exc}") from exc


def _run(args: argparse.Namespace) -> int:
    with _client(args.url) as client:
        if args.verb == "submit":
            return submit(client, args.file, args.deployment, args.chunk_size, args.normalize)
        if args.verb == "list":
            return list_jobs(client)
        if args.verb == "watch":
            return watch(client, args.id, args.interval)
        if args.verb == "cancel":
            job = _call(client, "POST", f"/jobs/{args.id}/cancel")
            print(f"{job['id']}: {job['state']}")
            return 0
        errors = args.errors or errors_path(args.output)
        return results(client, args.id, args.output, errors)


def _client(url: str | None) -> httpx.Client:
    base = url or os.environ.get("RECEIVER_URL")
    token = os.environ.get("RECEIVER_API_TOKEN")
    if not base:
        raise CliError("set RECEIVER_URL (or --url) to the receiver, e.g. http://127.0.0.1:8000")
    if not token:
        raise CliError("set RECEIVER_API_TOKEN (the receiver's read token)")
    return httpx.Client(
        base_url=base.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise CliError(f"could not reach the receiver at {client.base_url}: {exc}") from exc
    if response.is_success:
        return response.json() if "json" in response.headers.get("content-type", "") else response
    try:
        reason = response.json().get("error") or response.text
    except ValueError:
        reason = response.text
    raise CliError(f"{method} {path}: {response.status_code} {reason}")


def submit(
    client: httpx.Client, file: Path, deployment: str, chunk_size: int, normalize: bool
) -> int:
    """Check every line first (nothing is uploaded if one is wrong), then stream the file."""
    if not 1 <= chunk_size <= MAX_CHUNK_TEXTS:
        raise CliError(f"--chunk-size must be 1 to {MAX_CHUNK_TEXTS}")
    count = _check(file)

    def body() -> Iterator[bytes]:
        for item in read_file(file):
            yield as_jsonl(item)

    params = {"deployment": deployment, "chunk_size": chunk_size, "normalize": normalize}
    job = _call(
        client,
        "POST",
        "/jobs",
        params=params,
        content=body(),
        headers={"Content-Type": "application/x-ndjson"},
        timeout=UPLOAD_TIMEOUT,
    )
    chunks = "1 chunk" if job["chunks"] == 1 else f"{job['chunks']} chunks"
    print(f"{file}: {count} texts in {chunks} on {deployment}", file=sys.stderr)
    print(job["id"])
    return 0


def _check(file: Path) -> int:
    try:
        return sum(1 for _ in read_file(file))
    except InputError as exc:
        raise CliError(f"{file}: {exc}") from exc
    except OSError as exc:
        raise CliError(f"{file}: {exc.strerror}") from exc


def list_jobs(client: httpx.Client) -> int:
    for job in _call(client, "GET", "/jobs")["items"]:
        print(
            f"{job['id']}  {job['state']:<10} {job['done_texts']:>9}/{job['texts']:<9}"
            f" failed {job['failed_texts']:<7} canceled {job['canceled_texts']:<7}"
            f" {job['deployment']}  {job['created_at']}"
        )
    return 0


def progress_line(job: dict[str, Any], width: int = 30) -> str:
    total = max(1, job["texts"])
    ended = job["done_texts"] + job["failed_texts"]
    filled = int(width * ended / total)
    bar = "#" * filled + "-" * (width - filled)
    eta = job["eta_seconds"]
    eta_text = "--" if eta is None else f"{int(eta) // 60}m{int(eta) % 60:02d}s"
    failed_chunks = job["chunk_states"].get("failed", 0)
    return (
        f"[{bar}] {job['done_texts']}/{job['texts']} texts  {job['texts_per_second']:.0f}/s"
        f"  ETA {eta_text}  failed chunks {failed_chunks}  {job['state']}"
    )


def watch(client: httpx.Client, job_id: str, interval: float) -> int:
    """Redraw one line on a terminal; elsewhere (a log), print a line when it changes."""
    terminal = sys.stderr.isatty()
    last = ""
    while True:
        job = _call(client, "GET", f"/jobs/{job_id}")
        line = progress_line(job)
        if terminal:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        elif line != last:
            print(line, file=sys.stderr, flush=True)
        last = line
        if job["state"] in ("completed", "canceled"):
            break
        time.sleep(interval)  # polling a remote service, not synchronising a test
    if terminal:
        print(file=sys.stderr)
    return _verdict(job)


def _verdict(job: dict[str, Any]) -> int:
    if job["state"] == "completed" and job["failed_texts"] == 0:
        print(f"{job['id']}: all {job['texts']} texts embedded")
        return 0
    print(
        f"{job['id']}: {job['state']}, {job['done_texts']} of {job['texts']} texts embedded,"
        f" {job['failed_texts']} failed"
    )
    return 1


class _Chunks:
    def __init__(self, client: httpx.Client, job_id: str) -> None:
        self.client = client
        self.job_id = job_id

    def chunk(self, n: int) -> dict[str, Any]:
        found: dict[str, Any] = _call(self.client, "GET", f"/jobs/{self.job_id}/chunks/{n}")
        return found

    def vectors(self, n: int) -> bytes:
        response = _call(self.client, "GET", f"/jobs/{self.job_id}/chunks/{n}/vectors")
        return bytes(response.content)


def results(client: httpx.Client, job_id: str, output: Path, errors: Path) -> int:
    job = _call(client, "GET", f"/jobs/{job_id}")
    if job["state"] not in ("completed", "canceled"):
        raise CliError(
            f"job {job_id} is {job['state']} ({job['done_texts']} of {job['texts']} texts):"
            " wait for it with `jobs watch`"
        )
    try:
        failed = write(
            output, errors, chunk_results(_Chunks(client, job_id), job["chunks"]), job["done_texts"]
        )
    except ResultsError as exc:
        raise CliError(str(exc)) from exc
    where = f"{output} and {ids_path(output)}" if output.suffix.lower() == ".npy" else str(output)
    print(f"{job['done_texts']} vectors in {where}; {failed} failed ids in {errors}")
    return 0 if failed == 0 else 1
