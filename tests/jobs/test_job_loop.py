"""A corpus job offline, end to end: the CLI uploads a file to a real receiver process, which
runs it on a deployment of the stand-in (predictions on the real Cog server, npy outputs
uploaded to the stand-in, webhooks back, files downloaded), and writes the vectors back in
input order."""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas
import polars
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sqlalchemy import text

from embedder.engine import Embedder
from localcog.loopback import free_port
from localcog.postgres import scratch_database
from receiver.store import Store, StoreConfig
from standin.local import MODEL, ReceiverProcess, local_replicate, receiver_process
from standin.memory import StandIn
from tests.support.commands import CLEAN_ENV, run_module
from tests.support.embeddings import WEIGHTS, cosines
from tests.support.receiving import READ_TOKEN, read
from tests.support.standin import STANDIN_SECRET, STANDIN_TOKEN, standin_env

RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, schema_file: Path) -> Iterator[StandIn]:
    logs = tmp_path_factory.mktemp("local")
    with local_replicate(logs, STANDIN_TOKEN, STANDIN_SECRET, RETRY_DELAYS) as standin:
        yield standin


@pytest.fixture(scope="module")
def deployment(local: StandIn) -> str:
    env = {**standin_env(local.base_url), "MODEL": MODEL, "DEPLOYMENT": "local/jobs"}
    result = run_module("ship.deploy", env={**env, "HARDWARE": "cpu"})
    assert result.returncode == 0, result.stderr
    return "local/jobs"


def job_receiver(
    stack: ExitStack,
    local: StandIn,
    database_url: str,
    outputs: Path,
    log: Path,
    port: int | None = None,
    public_url: str | None = None,
    max_attempts: int = 3,
) -> ReceiverProcess:
    """A receiver process that runs jobs: it names itself as the webhook's address. Missed
    webhooks are reconciled within a second; a dead runner's chunks are taken over in 4 s."""
    port = port or free_port()
    env = {
        **CLEAN_ENV,
        **standin_env(local.base_url),
        "RECEIVER_DATABASE_URL": database_url,
        "RECEIVER_API_TOKEN": READ_TOKEN,
        "RECEIVER_OUTPUT_DIR": str(outputs),
        "RECEIVER_DOWNLOAD_HOSTS": local.base_url,
        "RECEIVER_PUBLIC_URL": public_url or f"http://127.0.0.1:{port}",
        "RECEIVER_WORKER_POLL_SECONDS": "0.1",
        "RECEIVER_JOB_POLL_SECONDS": "0.1",
        "RECEIVER_JOB_CLAIM_SECONDS": "4",
        "RECEIVER_JOB_MAX_ATTEMPTS": str(max_attempts),
        "RECEIVER_RECONCILE_AFTER_SECONDS": "0.5",
        "RECEIVER_RECONCILE_INTERVAL_SECONDS": "0.2",
    }
    return stack.enter_context(receiver_process(env, log, port))


@pytest.fixture
def collector(local: StandIn, tmp_path: Path) -> Iterator[ReceiverProcess]:
    database = f"sqlite:///{tmp_path / 'receiver.db'}"
    with ExitStack() as stack:
        yield job_receiver(stack, local, database, tmp_path / "outputs", tmp_path / "r.log")


def jobs_cli(receiver: ReceiverProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"RECEIVER_URL": receiver.url, "RECEIVER_API_TOKEN": READ_TOKEN}
    return run_module("receiver", "jobs", *args, env=env, timeout=600)


def corpus(count: int, test: str) -> list[str]:
    """Texts of this test only: the tests share one stand-in deployment, and a job recovering a
    chunk whose create went unanswered adopts any prediction of the same input made there in
    the last minutes (runner.py, _recover), another test's too."""
    words = ["river", "quantum", "bread", "violin", "glacier", "tax", "orbit", "poem", "chess"]
    rng = np.random.default_rng(7)
    return [
        " ".join(rng.choice(words, size=int(rng.integers(1, 12)))) + f" #{test}-{i}"
        for i in range(count)
    ]


def text_file(folder: Path, texts: list[str]) -> Path:
    """Plain text, one text a line: ids are line numbers."""
    source = folder / "corpus.txt"
    source.write_text("".join(f"{text}\n" for text in texts))
    return source


def test_a_job_comes_back_in_input_order_equal_to_direct_embeddings(
    collector: ReceiverProcess, deployment: str, tmp_path: Path
) -> None:
    texts = corpus(2000, "order")
    ids = [f"doc-{(i * 7919) % 2000:04d}" for i in range(len(texts))]  # not sorted: order kept
    source = tmp_path / "corpus.jsonl"
    source.write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts, strict=True))
    )

    submitted = jobs_cli(
        collector, "submit", str(source), "--deployment", deployment, "--chunk-size", "256"
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert "2000 texts in 8 chunks" in submitted.stderr

    watched = jobs_cli(collector, "watch", job_id, "--interval", "0.2")
    assert watched.returncode == 0, watched.stderr + watched.stdout
    assert f"{job_id}: all 2000 texts embedded" in watched.stdout

    npy = tmp_path / "out.npy"
    written = jobs_cli(collector, "results", job_id, "--output", str(npy))
    assert written.returncode == 0, written.stderr
    vectors = np.load(npy)
    got_ids = [
        json.loads(line)["id"] for line in (tmp_path / "out.ids.jsonl").read_text().splitlines()
    ]
    assert got_ids == ids
    assert (tmp_path / "out.errors.jsonl").read_text() == ""
    expected = Embedder(WEIGHTS, torch.device("cpu"), torch.float32).embed(texts)
    assert vectors.shape == (2000, 384)
    assert cosines(vectors, expected).min() >= 0.999

    nowhere = jobs_cli(collector, "results", job_id, "--output", str(tmp_path / "no/dir/x.npy"))
    assert nowhere.returncode == 2
    assert nowhere.stderr.count("\n") == 1
    assert nowhere.stderr.startswith("receiver: ")

    parquet = tmp_path / "out.parquet"
    assert jobs_cli(collector, "results", job_id, "--output", str(parquet)).returncode == 0
    table = pq.read_table(parquet)
    assert table.column("id").to_pylist() == ids
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert np.array_equal(
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), vectors
    )
    assert_readable_by_dataframe_tools(parquet, ids, vectors)


def assert_readable_by_dataframe_tools(parquet: Path, ids: list[str], vectors: np.ndarray) -> None:
    """What users open results with reads the same ids and vectors, in order."""
    frame = pandas.read_parquet(parquet)
    assert frame["id"].tolist() == ids
    assert np.array_equal(np.stack(frame["embedding"].to_numpy()), vectors)
    polars_frame = polars.read_parquet(parquet)
    assert polars_frame.schema["embedding"] == polars.Array(polars.Float32, 384)
    assert polars_frame["id"].to_list() == ids
    assert np.array_equal(polars_frame["embedding"].to_numpy(), vectors)
    with duckdb.connect() as db:  # a FLOAT[] list to DuckDB: Parquet has no fixed-size list
        rows = db.execute(f"SELECT id, embedding FROM '{parquet}'").fetchall()
    assert [row[0] for row in rows] == ids
    assert np.array_equal(np.array([row[1] for row in rows], dtype=np.float32), vectors)


def test_a_bad_file_is_refused_with_its_line_and_creates_nothing(
    collector: ReceiverProcess, deployment: str, local: StandIn, tmp_path: Path
) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"id": "a", "text": "fine"}\n{"id": "a", "text": "again"}\n')
    before = len(local.predictions)
    refused = jobs_cli(collector, "submit", str(source), "--deployment", deployment)
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"receiver: {source}: line 2: duplicate id 'a'"
    listed = jobs_cli(collector, "list")
    assert listed.returncode == 0
    assert listed.stdout == ""
    assert len(local.predictions) == before


def test_two_receivers_on_one_postgresql_do_no_chunk_twice(
    local: StandIn, deployment: str, tmp_path: Path
) -> None:
    """Both run the job (the same tables, the same creation limit); the files land in one
    shared folder, as a shared volume holds them in production."""
    texts = corpus(600, "two-receivers")
    source = text_file(tmp_path, texts)
    before = set(local.predictions)
    with scratch_database() as database, ExitStack() as stack:
        first = job_receiver(stack, local, database, tmp_path / "outputs", tmp_path / "a.log")
        job_receiver(stack, local, database, tmp_path / "outputs", tmp_path / "b.log")
        submitted = jobs_cli(
            first, "submit", str(source), "--deployment", deployment, "--chunk-size", "25"
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        watched = jobs_cli(first, "watch", job_id, "--interval", "0.2")
        assert watched.returncode == 0, watched.stderr + watched.stdout
        npy = tmp_path / "out.npy"
        assert jobs_cli(first, "results", job_id, "--output", str(npy)).returncode == 0
    created = [local.predictions[p] for p in set(local.predictions) - before]
    assert len(created) == 24  # one prediction a chunk: none created twice
    ids = [json.loads(line)["id"] for line in (tmp_path / "out.ids.jsonl").read_text().splitlines()]
    assert ids == [str(n) for n in range(1, 601)]  # plain text: ids are line numbers
    expected = Embedder(WEIGHTS, torch.device("cpu"), torch.float32).embed(texts)
    assert cosines(np.load(npy), expected).min() >= 0.999


def test_a_receiver_killed_again_and_again_during_a_job_loses_and_doubles_nothing(
    local: StandIn, deployment: str, tmp_path: Path
) -> None:
    """SIGKILL at random moments (creating, recording, downloading, between): each restart on
    the same store and address picks the job up; the results are whole and in order."""
    texts = corpus(2400, "killed")  # longer than the kills take (a restart alone takes seconds)
    source = text_file(tmp_path, texts)
    database = f"sqlite:///{tmp_path / 'receiver.db'}"
    port = free_port()
    moments = random.Random(12)
    before = set(local.predictions)
    with ExitStack() as stack:
        receiver = job_receiver(stack, local, database, tmp_path / "out", tmp_path / "0.log", port)
        submitted = jobs_cli(
            receiver, "submit", str(source), "--deployment", deployment, "--chunk-size", "25"
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
    for kill in range(1, 5):
        with ExitStack() as stack:
            receiver = job_receiver(
                stack, local, database, tmp_path / "out", tmp_path / f"{kill}.log", port
            )
            # Fault injection, not synchronisation: the job runs for a random while, then dies.
            time.sleep(moments.uniform(0.1, 1.5))
            receiver.process.kill()
            receiver.process.wait()
    store = Store.open(StoreConfig(database, [local.base_url]))
    unfinished = store.jobs.job(job_id, time.time())
    store.engine.dispose()
    assert unfinished is not None
    assert unfinished["state"] == "running"  # the kills cut into the job, not after it
    with ExitStack() as stack:
        receiver = job_receiver(stack, local, database, tmp_path / "out", tmp_path / "5.log", port)
        watched = jobs_cli(receiver, "watch", job_id, "--interval", "0.2")
        assert watched.returncode == 0, watched.stderr + watched.stdout
        npy = tmp_path / "out.npy"
        assert jobs_cli(receiver, "results", job_id, "--output", str(npy)).returncode == 0
    ids = [json.loads(line)["id"] for line in (tmp_path / "out.ids.jsonl").read_text().splitlines()]
    assert ids == [str(n) for n in range(1, 2401)]
    # One prediction a chunk: a create whose answer died with the process is found on
    # Replicate's list of predictions, not made again.
    assert len(set(local.predictions) - before) == 96  # 2400 texts, chunks of 25
    expected = Embedder(WEIGHTS, torch.device("cpu"), torch.float32).embed(texts)
    assert cosines(np.load(npy), expected).min() >= 0.999


def test_a_job_whose_webhooks_never_arrive_is_collected_by_reconciliation(
    local: StandIn, deployment: str, tmp_path: Path
) -> None:
    """RECEIVER_PUBLIC_URL names a port nobody listens on: not one webhook arrives, and the
    predictions recorded at creation are fetched from the API instead."""
    texts = corpus(300, "no-webhooks")
    source = text_file(tmp_path, texts)
    nowhere = f"http://127.0.0.1:{free_port()}"
    with ExitStack() as stack:
        receiver = job_receiver(
            stack,
            local,
            f"sqlite:///{tmp_path / 'receiver.db'}",
            tmp_path / "out",
            tmp_path / "r.log",
            public_url=nowhere,
        )
        submitted = jobs_cli(
            receiver, "submit", str(source), "--deployment", deployment, "--chunk-size", "100"
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        watched = jobs_cli(receiver, "watch", job_id, "--interval", "0.2")
        assert watched.returncode == 0, watched.stderr + watched.stdout
        followed = {
            read(receiver.url, f"/jobs/{job_id}/chunks/{n}").json()["prediction_id"]
            for n in range(3)
        }
        store = Store.open(StoreConfig(f"sqlite:///{tmp_path / 'receiver.db'}", []))
        with store.engine.connect() as conn:
            sources = set(conn.execute(text("SELECT DISTINCT source FROM deliveries")).scalars())
        store.engine.dispose()
    assert sources == {"create", "reconcile"}  # no webhook came
    tried = {a.prediction_id for a in local.attempts if a.outcome == "ConnectError"}
    assert followed <= tried  # Replicate did try to deliver each one, and failed


def test_interrupted_predictions_are_made_again_and_a_chunk_that_never_succeeds_is_reported(
    local: StandIn, deployment: str, tmp_path: Path
) -> None:
    """Replicate interrupts the first prediction of chunk 1 and every one of chunk 3: chunk 1
    succeeds on its second attempt; chunk 3 fails for good, its ids in the errors file."""
    texts = corpus(400, "interrupted")
    source = text_file(tmp_path, texts)
    once = texts[100]
    always = texts[300]
    interrupted: list[str] = []

    def interrupt(prediction: dict[str, Any]) -> bool:
        first = prediction["input"]["texts"][0]
        if first == always or (first == once and once not in interrupted):
            interrupted.append(first)
            return True
        return False

    local.interrupt = interrupt
    try:
        with ExitStack() as stack:
            receiver = job_receiver(
                stack,
                local,
                f"sqlite:///{tmp_path / 'receiver.db'}",
                tmp_path / "out",
                tmp_path / "r.log",
                max_attempts=2,
            )
            submitted = jobs_cli(
                receiver, "submit", str(source), "--deployment", deployment, "--chunk-size", "100"
            )
            assert submitted.returncode == 0, submitted.stderr
            job_id = submitted.stdout.strip()
            watched = jobs_cli(receiver, "watch", job_id, "--interval", "0.2")
            npy = tmp_path / "out.npy"
            written = jobs_cli(receiver, "results", job_id, "--output", str(npy))
            chunks = [read(receiver.url, f"/jobs/{job_id}/chunks/{n}").json() for n in range(4)]
    finally:
        local.interrupt = None
    assert interrupted == [once, always, always]
    assert watched.returncode == 1
    assert "100 failed" in watched.stdout
    assert [(c["state"], c["attempts"]) for c in chunks] == [
        ("done", 1),
        ("done", 2),
        ("done", 1),
        ("failed", 2),
    ]
    assert chunks[3]["error"] == (
        "prediction failed: Prediction interrupted; please retry (code: PA) (after 2 attempts)"
    )
    assert written.returncode == 1
    errors = [json.loads(line) for line in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == [str(n) for n in range(301, 401)]
    assert {e["error"] for e in errors} == {chunks[3]["error"]}
    ids = [json.loads(line)["id"] for line in (tmp_path / "out.ids.jsonl").read_text().splitlines()]
    assert ids == [str(n) for n in range(1, 301)]
    expected = Embedder(WEIGHTS, torch.device("cpu"), torch.float32).embed(texts[:300])
    assert cosines(np.load(npy), expected).min() >= 0.999
