"""The MiniLM-L6 BERT encoder in plain torch.

Why not `transformers.BertModel`: importing transformers alone costs ~4 s of
cold boot, and its generic layers keep Q, K and V as three matmuls. This is the
same arithmetic (post-LayerNorm BERT, exact GELU) in about forty lines, with the
three attention projections fused into one matmul.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT `config.json` that the forward pass needs."""

    hidden_size: int
    num_layers: int
    num_heads: int
    max_positions: int
    layer_norm_eps: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BertConfig:
        if data.get("model_type") != "bert" or data.get("hidden_act") != "gelu":
            raise ValueError("config.json does not describe a BERT model with exact GELU")
        return cls(
            hidden_size=int(data["hidden_size"]),
            num_layers=int(data["num_hidden_layers"]),
            num_heads=int(data["num_attention_heads"]),
            max_positions=int(data["max_position_embeddings"]),
            layer_norm_eps=float(data["layer_norm_eps"]),
        )


@dataclass(frozen=True)
class _Layer:
    qkv_w: Tensor
    qkv_b: Tensor
    out_w: Tensor
    out_b: Tensor
    ln1: tuple[Tensor, Tensor]
    up_w: Tensor
    up_b: Tensor
    down_w: Tensor
    down_b: Tensor
    ln2: tuple[Tensor, Tensor]


class Bert:
    """Token ids in, last hidden states out; weights live on one device in one dtype."""

    def __init__(
        self, state: dict[str, Tensor], config: BertConfig, device: torch.device, dtype: torch.dtype
    ) -> None:
        def get(name: str) -> Tensor:
            return state[name].to(device=device, dtype=dtype).contiguous()

        def ln(prefix: str) -> tuple[Tensor, Tensor]:
            return get(f"{prefix}.LayerNorm.weight"), get(f"{prefix}.LayerNorm.bias")

        self.config = config
        # The token-type table only ever contributes row 0 (single-segment input):
        # fold it into the position table once instead of adding it per batch.
        self.word = get("embeddings.word_embeddings.weight")
        self.position = (
            get("embeddings.position_embeddings.weight")
            + get("embeddings.token_type_embeddings.weight")[0]
        )
        self.embed_ln = ln("embeddings")
        self.layers = [self._layer(get, ln, f"encoder.layer.{i}") for i in range(config.num_layers)]

    @staticmethod
    def _layer(get: Any, ln: Any, p: str) -> _Layer:
        qkv = [f"{p}.attention.self.{n}" for n in ("query", "key", "value")]
        return _Layer(
            qkv_w=torch.cat([get(f"{n}.weight") for n in qkv]),
            qkv_b=torch.cat([get(f"{n}.bias") for n in qkv]),
            out_w=get(f"{p}.attention.output.dense.weight"),
            out_b=get(f"{p}.attention.output.dense.bias"),
            ln1=ln(f"{p}.attention.output"),
            up_w=get(f"{p}.intermediate.dense.weight"),
            up_b=get(f"{p}.intermediate.dense.bias"),
            down_w=get(f"{p}.output.dense.weight"),
            down_b=get(f"{p}.output.dense.bias"),
            ln2=ln(f"{p}.output"),
        )

    def __call__(self, input_ids: Tensor, mask: Tensor, real: Tensor) -> Tensor:
        """input_ids, mask [batch, length] (mask True on real tokens), real: the flat positions
        of the real tokens (the mask's nonzero) -> [batch, length, hidden], padding zero.

        The dense layers, nine tenths of the work, run on the real tokens only, packed into one
        [tokens, hidden] matrix: a pass of texts of different lengths (queries from many
        predictions) pays nothing for its padding there. Only attention, which needs each
        text's tokens side by side, sees the padded [batch, length] layout.
        """
        batch, length = input_ids.shape
        hidden = self.config.hidden_size
        heads = self.config.num_heads
        eps = self.config.layer_norm_eps
        x = F.embedding(input_ids, self.word) + self.position[:length]
        x = F.layer_norm(x, (hidden,), *self.embed_ln, eps).reshape(batch * length, hidden)[real]
        keys = mask[:, None, None, :]
        for layer in self.layers:
            qkv = F.linear(x, layer.qkv_w, layer.qkv_b)
            padded = qkv.new_zeros(batch * length, 3 * hidden).index_copy_(0, real, qkv)
            split = padded.view(batch, length, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
            q, k, v = split.unbind(0)  # what unpacking does, without the tracer's warning
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
            a = a.transpose(1, 2).reshape(batch * length, hidden)[real]
            x = F.layer_norm(F.linear(a, layer.out_w, layer.out_b) + x, (hidden,), *layer.ln1, eps)
            h = F.gelu(F.linear(x, layer.up_w, layer.up_b))
            x = F.layer_norm(
                F.linear(h, layer.down_w, layer.down_b) + x, (hidden,), *layer.ln2, eps
            )
        out = x.new_zeros(batch * length, hidden).index_copy_(0, real, x)
        return out.view(batch, length, hidden)
