"""Benchmarks: every figure is a ratio against a baseline measured in the same run."""

from __future__ import annotations

import tempfile

from localcog import REPO

WORK_ROOT = REPO / ".bench"  # git-ignored; on the repository's disk, which holds large runs


def scratch(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A folder for one run's files under .bench/ (made on a fresh clone), removed after it."""
    WORK_ROOT.mkdir(exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=prefix, dir=WORK_ROOT)
