"""The one-slot baseline of `make bench-model`: the image's setup before predictions shared
forward passes. One prediction at a time (no @concurrent: the image and the local server give
it one slot), its texts in batches of its own. The engine is today's (packed dense layers
included), the precision and the JSON output too, so the comparison measures the sharing
alone. JSON output only: the benchmark asks for nothing else."""

from __future__ import annotations

from typing import Any

import torch
from cog import BaseRunner, Input

from embedder.engine import Embedder
from embedder.precision import dtype_from_env, resolve_dtype
from predict import WEIGHTS_DIR, check_texts


class Runner(BaseRunner):
    def setup(self) -> None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = resolve_dtype(dtype_from_env(), device)
        self.embedder = Embedder(WEIGHTS_DIR, device, dtype)
        self.embedder.embed(["warm up"])

    async def run(
        self,
        texts: list[str] = Input(description="Texts to embed"),
        normalize: bool = Input(default=True),
        output_format: str = Input(default="json", choices=["json", "npy"]),
    ) -> Any:
        texts = check_texts(texts)
        print(f"embedding {len(texts)} texts")
        return self.embedder.embed(texts, normalize)
