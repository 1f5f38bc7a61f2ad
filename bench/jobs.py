"""`make bench-jobs`: a corpus job offline against the Cog server's own throughput.

One Cog server (the stand-in's, as `make stack` runs it) does the work both ways:
1. baseline: the job's chunks posted straight to it, one prediction at a time, npy output
   uploaded to the stand-in (a one-instance deployment runs one at a time, as the stand-in
   does): texts/s of the model behind the server, nothing else;
2. the job: `python -m receiver jobs submit` to a receiver process running jobs on the
   stand-in, from the first byte uploaded to the last chunk's file downloaded: texts/s of the
   whole machinery (upload, rate limit, creation, webhooks, downloads) around the same work.
Baseline, job, baseline: drift hits both sides. The job's ratio to the baseline's mean is the
figure (goal >= 0.8: the job machinery must not be the bottleneck), with the peak memory of the
receiver's processes and its results written back and checked.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

from bench import scratch
from bench.corpus import mixed_texts
from embedder.engine import load_tokenizer
from localcog import REPO
from localcog.loopback import free_port
from localcog.processes import stop_on_signals
from receiver.jobs.store import prediction_input
from standin.api_deployments import release
from standin.local import MODEL, clean_env, local_replicate, receiver_process

TOKEN = "r8_bench_token"
SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
READ_TOKEN = "bench-read-token"
DEPLOYMENT = "local/bench"
PREDICTIONS_PER_MINUTE = 600  # Replicate's creation limit


def baseline(cog_url: str, texts: list[str], chunk_size: int) -> float:
    """Texts/s of the chunks posted straight to the Cog server, one after another."""
    start = time.perf_counter()
    with httpx.Client(timeout=600) as client:
        for first in range(0, len(texts), chunk_size):
            chunk = texts[first : first + chunk_size]
            payload = {"input": prediction_input(chunk, True)}
            answer = client.post(f"{cog_url}/predictions", json=payload).json()
            if answer.get("status") != "succeeded":
                raise RuntimeError(f"bench: baseline prediction {answer.get('status')}")
    return len(texts) / (time.perf_counter() - start)


def peak_memory_mb(pid: int) -> float:
    """VmHWM of a process and its children, in MiB (read while they run)."""
    total = 0
    pids = [pid]
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip() or 0) == pid:
            pids.append(int(status.parent.name))
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(), "RECEIVER_URL": url, "RECEIVER_API_TOKEN": READ_TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "receiver", "jobs", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def run_job(
    standin_url: str, work: Path, source: Path, texts: int, chunk_size: int
) -> tuple[float, float]:
    """Texts/s of the job from upload to its last file, and the receiver's peak memory."""
    port = free_port()
    env = {
        **clean_env(),
        "REPLICATE_API_TOKEN": TOKEN,
        "REPLICATE_BASE_URL": standin_url,
        "RECEIVER_DATABASE_URL": f"sqlite:///{work / 'receiver.db'}",
        "RECEIVER_API_TOKEN": READ_TOKEN,
        "RECEIVER_OUTPUT_DIR": str(work / "outputs"),
        "RECEIVER_DOWNLOAD_HOSTS": standin_url,
        "RECEIVER_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    with ExitStack() as stack:
        receiver = stack.enter_context(receiver_process(env, work / "receiver.log", port))
        start = time.perf_counter()
        submitted = cli(
            receiver.url,
            "submit",
            str(source),
            "--deployment",
            DEPLOYMENT,
            "--chunk-size",
            str(chunk_size),
        )
        if submitted.returncode != 0:
            raise RuntimeError(f"bench: submit failed: {submitted.stderr.strip()}")
        job_id = submitted.stdout.strip()
        with httpx.Client(headers={"authorization": f"Bearer {READ_TOKEN}"}) as client:
            while True:
                job = client.get(f"{receiver.url}/jobs/{job_id}").json()
                if job["state"] != "running":
                    break
                time.sleep(0.1)  # the measurement's resolution
        seconds = time.perf_counter() - start
        memory = peak_memory_mb(receiver.process.pid)
        if job["state"] != "completed" or job["done_texts"] != texts:
            raise RuntimeError(f"bench: job ended {job['state']}, {job['done_texts']} texts")
        output = work / "results.npy"
        written = cli(receiver.url, "results", job_id, "--output", str(output))
        if written.returncode != 0:
            raise RuntimeError(f"bench: results failed: {written.stderr.strip()}")
        if np.load(output, mmap_mode="r").shape != (texts, 384):
            raise RuntimeError("bench: the results do not hold every text")
    return texts / seconds, memory


def on_paper(chunk_size: int) -> None:
    total = 10_000_000
    predictions = -(-total // chunk_size)
    minutes = predictions / PREDICTIONS_PER_MINUTE
    print(
        f"  on paper  10 000 000 texts = {predictions} predictions of {chunk_size}: at"
        f" {PREDICTIONS_PER_MINUTE}/min creation alone takes {minutes:.0f} min; the GPU's"
        " rate decides the rest (not measured here: no GPU)"
    )


def main() -> None:
    stop_on_signals()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--chunk-size", type=int, default=1024)
    args = parser.parse_args()
    texts = mixed_texts(args.texts, load_tokenizer(REPO / "weights"), seed=3)
    with scratch("bench-jobs-") as folder:
        work = Path(folder)
        source = work / "corpus.jsonl"
        with source.open("w") as file:
            for n, text in enumerate(texts):
                file.write(json.dumps({"id": f"t{n}", "text": text}) + "\n")
        schema = json.loads((REPO / ".cog" / "openapi_schema.json").read_text())
        with local_replicate(work, TOKEN, SECRET) as standin:
            version = standin.add_version(MODEL, schema)
            config = {"hardware": "cpu", "min_instances": 0, "max_instances": 1}
            standin.deployments[DEPLOYMENT] = {
                "owner": "local",
                "name": "bench",
                "current_release": release(standin, 1, MODEL, version, config),
            }
            assert standin.cog_url is not None
            before = baseline(standin.cog_url, texts, args.chunk_size)
            job_rate, memory = run_job(standin.base_url, work, source, len(texts), args.chunk_size)
            after = baseline(standin.cog_url, texts, args.chunk_size)
    cog_rate = (before + after) / 2
    cores = os.cpu_count()
    print(
        f"[jobs] {len(texts)} mixed texts (4-250 tokens), chunks of {args.chunk_size}, {cores} CPUs"
    )
    print(f"  baseline  Cog server alone, chunk after chunk: {before:.1f} and {after:.1f} texts/s")
    print(f"  job       upload to last file downloaded:      {job_rate:.1f} texts/s")
    print(f"  ratio     {job_rate / cog_rate:.2f}x the Cog server's own rate (goal >= 0.8x)")
    print(f"  memory    receiver processes' peak (VmHWM, summed): {memory:.0f} MiB")
    on_paper(args.chunk_size)


if __name__ == "__main__":
    main()
