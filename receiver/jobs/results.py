"""A finished job's results, written in input order one chunk at a time, so a job of any size
needs one chunk's vectors in memory: `.npy` with its ids in `<stem>.ids.jsonl`, or Parquet
(`id`, `embedding` as a fixed-size float32 list). The ids of failed or canceled chunks go to
the errors file, one `{"id", "error"}` line each."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import orjson

NPY_HEADER_BYTES = 128  # numpy's version 1.0 header, padded: room for any 2-D float32 shape


class ResultsError(Exception):
    """Results that cannot be written as asked; one line for the user."""


@dataclass(frozen=True)
class ChunkResult:
    n: int
    ids: list[str]
    state: str
    error: str | None
    vectors: np.ndarray | None  # float32 [len(ids), dimensions] when done


class ChunkSource(Protocol):
    def chunk(self, n: int) -> dict[str, Any]: ...

    def vectors(self, n: int) -> bytes: ...


def chunk_results(source: ChunkSource, chunks: int) -> Iterator[ChunkResult]:
    """Each chunk in order, its vectors checked against its ids."""
    for n in range(chunks):
        chunk = source.chunk(n)
        ids = list(chunk["ids"])
        vectors = None
        if chunk["state"] == "done":
            try:
                vectors = np.load(io.BytesIO(source.vectors(n)), allow_pickle=False)
            except ValueError as exc:
                raise ResultsError(f"chunk {n}: its file is not an npy array ({exc})") from exc
            if vectors.ndim != 2 or vectors.shape[0] != len(ids) or vectors.dtype != np.float32:
                raise ResultsError(
                    f"chunk {n}: vectors of shape {vectors.shape} ({vectors.dtype}) for"
                    f" {len(ids)} ids"
                )
        yield ChunkResult(n, ids, chunk["state"], chunk.get("error"), vectors)


def ids_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.ids.jsonl")


def errors_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.errors.jsonl")


def write(output: Path, errors: Path, results: Iterator[ChunkResult], rows: int) -> int:
    """Write `rows` vectors to `output` (.npy or .parquet); returns the ids sent to `errors`."""
    suffix = output.suffix.lower()
    if suffix not in (".npy", ".parquet"):
        raise ResultsError(f"{output}: the output must end in .npy or .parquet")
    with errors.open("wb") as error_file:
        record_failed = _error_writer(error_file)
        if suffix == ".npy":
            return _write_npy(output, results, rows, record_failed)
        return _write_parquet(output, results, record_failed)


def _error_writer(file: IO[bytes]) -> Callable[[ChunkResult], int]:
    def record(result: ChunkResult) -> int:
        reason = result.error or f"chunk {result.state}"
        for item_id in result.ids:
            file.write(orjson.dumps({"id": item_id, "error": reason}) + b"\n")
        return len(result.ids)

    return record


def _write_npy(
    output: Path,
    results: Iterator[ChunkResult],
    rows: int,
    record_failed: Callable[[ChunkResult], int],
) -> int:
    """The header is written once the first chunk says how wide a vector is; its row count
    is known before (the job's done texts), so nothing is held back."""
    failed = 0
    written = 0
    with output.open("wb") as npy, ids_path(output).open("wb") as ids:
        header_written = False
        for result in results:
            if result.vectors is None:
                failed += record_failed(result)
                continue
            if not header_written:
                _npy_header(npy, rows, result.vectors.shape[1])
                header_written = True
            npy.write(result.vectors.astype("<f4", copy=False).tobytes())
            for item_id in result.ids:
                ids.write(orjson.dumps({"id": item_id}) + b"\n")
            written += len(result.ids)
        if not header_written:
            _npy_header(npy, 0, 0)
    if written != rows:
        raise ResultsError(f"expected {rows} vectors, the chunks held {written}")
    return failed


def _npy_header(file: IO[bytes], rows: int, width: int) -> None:
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, width)}
    np.lib.format.write_array_header_1_0(file, header)


def _write_parquet(
    output: Path, results: Iterator[ChunkResult], record_failed: Callable[[ChunkResult], int]
) -> int:
    """One row group per chunk: readers stream it back the same way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    failed = 0
    writer: pq.ParquetWriter | None = None
    try:
        for result in results:
            if result.vectors is None:
                failed += record_failed(result)
                continue
            width = result.vectors.shape[1]
            flat = pa.array(result.vectors.reshape(-1), type=pa.float32())
            embedding = pa.FixedSizeListArray.from_arrays(flat, width)
            table = pa.table({"id": pa.array(result.ids, type=pa.string()), "embedding": embedding})
            if writer is None:
                writer = pq.ParquetWriter(output, table.schema)
            writer.write_table(table)
        if writer is None:  # nothing done: an empty file of the same columns
            schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32(), 0))])
            writer = pq.ParquetWriter(output, schema)
    finally:
        if writer is not None:
            writer.close()
    return failed
