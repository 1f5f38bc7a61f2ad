"""Deterministic benchmark texts of mixed natural lengths (4 to 250 tokens).

The words come from the docstrings of a fixed list of standard-library modules:
natural English prose that every Python 3.11 install carries, so the benchmark
needs no download and gives the same texts on every machine.
"""

from __future__ import annotations

import importlib
import math
import random

from tokenizers import Tokenizer

MODULES = [
    "argparse",
    "asyncio",
    "base64",
    "collections",
    "configparser",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "functools",
    "hashlib",
    "heapq",
    "http",
    "inspect",
    "itertools",
    "json",
    "logging",
    "pathlib",
    "pickle",
    "queue",
    "shutil",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "traceback",
    "unittest",
    "uuid",
    "warnings",
    "zipfile",
]


def _words() -> list[str]:
    words: list[str] = []
    for name in MODULES:
        module = importlib.import_module(name)
        for _, obj in sorted(vars(module).items()):
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and len(doc) > 40:
                words.extend(doc.split())
    return words


def mixed_texts(count: int, tokenizer: Tokenizer, seed: int = 0) -> list[str]:
    """`count` texts whose token lengths are log-uniform between 4 and 250."""
    return _texts(count, tokenizer, seed, shortest=4, longest=250)


def query_texts(count: int, tokenizer: Tokenizer, seed: int = 0) -> list[str]:
    """`count` search-box queries: token lengths log-uniform between 4 and 24 ([CLS] and
    [SEP] included), a few words each, as a search box sends them."""
    return _texts(count, tokenizer, seed, shortest=4, longest=24)


def _texts(count: int, tokenizer: Tokenizer, seed: int, shortest: int, longest: int) -> list[str]:
    words = _words()
    rng = random.Random(seed)
    texts = []
    while len(texts) < count:
        target = round(math.exp(rng.uniform(math.log(shortest), math.log(longest))))
        start = rng.randrange(len(words) - 400)
        n = max(1, target)
        text = " ".join(words[start : start + n])
        while n > 1 and len(tokenizer.encode(text).ids) > target:
            n = max(1, int(n * 0.9))
            text = " ".join(words[start : start + n])
        if shortest <= len(tokenizer.encode(text).ids) <= longest:
            texts.append(text)
    return texts
