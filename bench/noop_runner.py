"""The Cog server's own ceiling in `make bench-model`: a runner that returns zeros at once.

Same inputs, the same checks and log line, and the same [n, 384] float32 output as ours, no
model: what it reaches is what coglet (HTTP, validation, the worker's IPC, JSON output) allows
on this machine, the most any runner can get through that server.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cog import BaseRunner, Input, concurrent

from embedder.engine import DIMENSIONS
from predict import check_texts


class Runner(BaseRunner):
    def setup(self) -> None:
        pass

    @concurrent(max=64)  # type: ignore[untyped-decorator]  # as predict.py's
    async def run(
        self,
        texts: list[str] = Input(description="Texts to embed"),
        normalize: bool = Input(default=True),
        output_format: str = Input(default="json", choices=["json", "npy"]),
    ) -> Any:
        texts = check_texts(texts)
        print(f"embedding {len(texts)} texts")
        return np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
