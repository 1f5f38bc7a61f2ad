"""A job's input: `{"id": ..., "text": ...}` per line (JSONL) or one text per line, and the
chunks it is cut into. Shared by the CLI, which checks a file before uploading it, and by the
receiver, which checks the upload again: either way a bad line is named by its number before
any prediction exists."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

# The model's limits (predict.py: MAX_TEXTS, MAX_TOTAL_BYTES): one chunk is one prediction.
MAX_CHUNK_TEXTS = 1024
MAX_CHUNK_BYTES = 2 << 20
MAX_ID_CHARS = 255
JSONL_SUFFIXES = (".jsonl", ".ndjson")


class InputError(ValueError):
    """A line that cannot be part of a job; the message names the line and what is wrong."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Item:
    id: str
    text: str

    @property
    def size(self) -> int:
        """UTF-8 bytes, as the model counts them against its limit."""
        return len(self.text.encode("utf-8", "surrogatepass"))


def parse_jsonl_line(line: bytes, number: int) -> Item:
    """One JSONL line: an object with a string `id` (1 to 255 characters) and a string `text`;
    other keys are ignored (metadata may ride along)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InputError(number, f"not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise InputError(number, 'expected an object like {"id": "a1", "text": "..."}')
    if "id" not in value or "text" not in value:
        missing = " and ".join(key for key in ("id", "text") if key not in value)
        raise InputError(number, f"missing {missing}")
    item_id = value["id"]
    text = value["text"]
    if not isinstance(item_id, str) or not 1 <= len(item_id) <= MAX_ID_CHARS:
        raise InputError(number, f"id must be a string of 1 to {MAX_ID_CHARS} characters")
    if not isinstance(text, str):
        raise InputError(number, f"text must be a string, not {type(text).__name__}")
    item = Item(item_id, text)
    if item.size > MAX_CHUNK_BYTES:
        raise InputError(
            number,
            f"text is {item.size} UTF-8 bytes; one text may be at most "
            f"{MAX_CHUNK_BYTES} (the model truncates at 256 tokens anyway)",
        )
    return item


def parse_text_line(line: bytes, number: int) -> Item:
    """One line of plain text: the text, its line number the id."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(number, f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    if not text.strip():
        raise InputError(number, "empty line (to embed an empty text, use JSONL)")
    return parse_jsonl_line(orjson.dumps({"id": str(number), "text": text}), number)


class LineChecker:
    """Lines in, items out, in input order: each line checked, ids unique, at least one.
    One line ending (\\n or \\r\\n) is taken off each line; a last line without one counts."""

    def __init__(self, jsonl: bool) -> None:
        self.jsonl = jsonl
        self.parse = parse_jsonl_line if jsonl else parse_text_line
        self.number = 0
        # JSONL ids, to refuse a repeated one: about 100 bytes an id while the upload runs.
        # Plain text needs none: its ids are line numbers.
        self.seen: set[str] = set()

    def check(self, raw: bytes) -> Item:
        self.number += 1
        line = raw.removesuffix(b"\n").removesuffix(b"\r")
        item = self.parse(line, self.number)
        if self.jsonl:
            if item.id in self.seen:
                raise InputError(self.number, f"duplicate id {item.id!r}")
            self.seen.add(item.id)
        return item

    def finish(self) -> None:
        if self.number == 0:
            raise InputError(1, "the input is empty")


def read_lines(lines: Iterable[bytes], jsonl: bool) -> Iterator[Item]:
    checker = LineChecker(jsonl)
    for line in lines:
        yield checker.check(line)
    checker.finish()


def read_file(path: Path) -> Iterator[Item]:
    """A file's items: JSONL if it ends in .jsonl or .ndjson, plain text otherwise."""
    with path.open("rb") as file:
        yield from read_lines(file, path.suffix.lower() in JSONL_SUFFIXES)


def as_jsonl(item: Item) -> bytes:
    return orjson.dumps({"id": item.id, "text": item.text}) + b"\n"


@dataclass(frozen=True)
class Chunk:
    n: int
    first: int  # the position of its first item in the job
    items: list[Item]


class ChunkCutter:
    """Numbered chunks as items arrive, so an upload is stored while it is read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pending: list[Item] = []
        self.texts = 0
        self.chunks = 0

    def add(self, item: Item) -> list[Chunk]:
        self.pending.append(item)
        if len(self.pending) < 2 * self.size:
            return []
        return self._cut(keep_last=True)  # the last chunk may still grow

    def end(self) -> list[Chunk]:
        return self._cut(keep_last=False)

    def _cut(self, keep_last: bool) -> list[Chunk]:
        ready = list(chunks(self.pending, self.size))
        self.pending = ready.pop() if keep_last and ready else []
        numbered = []
        for items in ready:
            numbered.append(Chunk(self.chunks, self.texts, items))
            self.texts += len(items)
            self.chunks += 1
        return numbered


def chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive items, at most `size` and MAX_CHUNK_BYTES of text to a chunk."""
    chunk: list[Item] = []
    total = 0
    for item in items:
        if chunk and (len(chunk) == size or total + item.size > MAX_CHUNK_BYTES):
            yield chunk
            chunk = []
            total = 0
        chunk.append(item)
        total += item.size
    if chunk:
        yield chunk
