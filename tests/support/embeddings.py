"""Reference inputs and measures for the model's outputs."""

from __future__ import annotations

import numpy as np

from localcog import REPO

WEIGHTS = REPO / "weights"

# Texts that stress the tokenizer and the pooling: long, unicode, CJK, emoji, code, empty.
VARIED_TEXTS = [
    "A man is playing a guitar.",
    "The new movie is awesome, the acting was great and the plot kept me guessing. " * 20,
    "Ça va? Über naïve café, jalapeño, Øresund, ß.",
    "我喜欢自然语言处理。東京は日本の首都です。한국어 문장도 있습니다.",
    "Привет, как дела? مرحبا بالعالم नमस्ते दुनिया",
    "I love pizza 🍕🔥😂 and 👩‍👩‍👧‍👦 families",
    'def square(x: int) -> int:\n    return x ** 2  # {"key": [1, 2, 3]}',
    "",
    "   \n\t  ",
    "[PAD] [CLS] [SEP] [MASK] [UNK]",
    "https://example.com/path?q=1&r=2 — 3.14159, 1e-9, $100",
    "x",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def assert_same_rows(got: np.ndarray, expected: np.ndarray) -> None:
    """Same vectors in the same order: cosine >= 0.9999 row by row, and each row as close to
    its own counterpart as to any other (texts that embed alike, such as "" and whitespace,
    tie), so two swapped rows of near-identical texts still show."""
    assert got.shape == expected.shape
    assert cosines(got, expected).min() >= 0.9999
    similarity = (got / np.linalg.norm(got, axis=1, keepdims=True)) @ (
        expected / np.linalg.norm(expected, axis=1, keepdims=True)
    ).T
    assert (np.diag(similarity) >= similarity.max(axis=1) - 1e-6).all()
