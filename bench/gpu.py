"""GPU utilisation while a load runs, as `nvidia-smi` samples it: `make bench-model` on a GPU.

`utilization.gpu` is the share of each sample period in which a kernel ran on the card: a
coarse figure (one tiny kernel counts as busy), but the one users read off `nvidia-smi`, and
the one that says whether the server left the card waiting.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

SAMPLE_MS = 100
QUERY = [
    "nvidia-smi",
    "--query-gpu=utilization.gpu",
    "--format=csv,noheader,nounits",
    "--id=0",
    f"--loop-ms={SAMPLE_MS}",
]


@dataclass
class Utilisation:
    samples: list[float] = field(default_factory=list)  # percent, one per SAMPLE_MS

    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def parse_samples(text: str) -> list[float]:
    """Percentages from nvidia-smi's lines; anything else (a warning, "[N/A]") is skipped."""
    return [float(line) for line in text.split() if line.isdigit()]


def present() -> bool:
    return torch.cuda.is_available() and shutil.which("nvidia-smi") is not None


@contextmanager
def sampled() -> Iterator[Utilisation]:
    """Samples GPU 0 while the block runs; on a machine without one, no samples."""
    utilisation = Utilisation()
    if not present():
        yield utilisation
        return
    process = subprocess.Popen(QUERY, stdout=subprocess.PIPE, text=True)
    try:
        yield utilisation
    finally:
        process.terminate()
        output, _ = process.communicate()
        utilisation.samples = parse_samples(output)
