"""A job's input: every bad line named by its number; chunks within the model's limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.jobs.items import (
    MAX_CHUNK_BYTES,
    ChunkCutter,
    InputError,
    Item,
    chunks,
    read_file,
    read_lines,
)


def items_of(text: bytes, jsonl: bool = True) -> list[Item]:
    return list(read_lines(text.splitlines(keepends=True), jsonl))


def error_of(text: bytes, jsonl: bool = True) -> str:
    with pytest.raises(InputError) as caught:
        items_of(text, jsonl)
    return str(caught.value)


def test_jsonl_items_keep_their_ids_and_order_and_ignore_other_keys() -> None:
    found = items_of(b'{"id": "b", "text": "second"}\n{"id": "a", "text": "", "meta": 1}\n')
    assert found == [Item("b", "second"), Item("a", "")]


def test_plain_text_ids_are_line_numbers_and_line_endings_are_dropped() -> None:
    found = items_of(b"first line\r\nsecond\nlast without newline", jsonl=False)
    assert found == [
        Item("1", "first line"),
        Item("2", "second"),
        Item("3", "last without newline"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "line 2: duplicate id 'a'"),
        (b'{"id": "a", "text": "x"}\n{"id": "b", "text": 5}\n', "line 2: text must be a string"),
        (b'{"id": "a", "text": "x"}\nnot json\n', "line 2: not JSON"),
        (b'["a", "x"]\n', "line 1: expected an object"),
        (b'{"text": "x"}\n', "line 1: missing id"),
        (b'{"id": 7, "text": "x"}\n', "line 1: id must be a string"),
        (b'{"id": "", "text": "x"}\n', "line 1: id must be a string"),
        (b'{"id": "a", "text": "x"}\n\n', "line 2: not JSON"),
        (b"", "line 1: the input is empty"),
    ],
)
def test_a_bad_jsonl_line_is_named(text: bytes, expected: str) -> None:
    assert error_of(text).startswith(expected)


def test_plain_text_refuses_empty_lines_and_bad_utf8() -> None:
    assert error_of(b"one\n\nthree\n", jsonl=False).startswith("line 2: empty line")
    assert error_of(b"one\n\xff\xfe\n", jsonl=False).startswith("line 2: not UTF-8")


def test_a_text_larger_than_a_prediction_may_hold_is_refused() -> None:
    huge = b'{"id": "a", "text": "' + b"x" * (MAX_CHUNK_BYTES + 1) + b'"}\n'
    assert "UTF-8 bytes" in error_of(huge)


def test_the_file_suffix_picks_the_format(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"id": "q1", "text": "hello"}\n')
    text = tmp_path / "in.txt"
    text.write_text('{"id": "q1", "text": "hello"}\n')
    assert list(read_file(jsonl)) == [Item("q1", "hello")]
    assert list(read_file(text)) == [Item("1", '{"id": "q1", "text": "hello"}')]


def test_chunks_are_cut_by_count_and_by_bytes() -> None:
    small = [Item(str(i), "x") for i in range(10)]
    assert [len(c) for c in chunks(small, 4)] == [4, 4, 2]
    big = [Item(str(i), "y" * (MAX_CHUNK_BYTES // 3 + 1)) for i in range(5)]
    assert [len(c) for c in chunks(big, 1024)] == [2, 2, 1]


def test_the_cutter_numbers_chunks_in_order_whatever_the_arrival() -> None:
    cutter = ChunkCutter(3)
    cut = []
    for i in range(10):
        cut += cutter.add(Item(str(i), "t"))
    cut += cutter.end()
    assert [(c.n, c.first, [i.id for i in c.items]) for c in cut] == [
        (0, 0, ["0", "1", "2"]),
        (1, 3, ["3", "4", "5"]),
        (2, 6, ["6", "7", "8"]),
        (3, 9, ["9"]),
    ]
    assert (cutter.texts, cutter.chunks) == (10, 4)
