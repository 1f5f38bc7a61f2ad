"""Text in, sentence embeddings out, with sentence-transformers' exact semantics.

The pipeline is all-MiniLM-L6-v2's: WordPiece with truncation at 256 tokens, the
BERT encoder, mean pooling over the attention mask, optional L2 normalisation.
Speed comes from choices that do not change the result: texts are sorted by
length so each batch carries little padding, batches are sized by a token budget
rather than a fixed count, the encoder may run in a reduced dtype while pooling
and normalisation stay in float32, and on the CPU the encoder is one traced call
whose thread count fits the call's size.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from embedder.bert import Bert, BertConfig

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
DIMENSIONS = 384

# torch's default thread count (OMP_NUM_THREADS or MKL_NUM_THREADS, else the physical cores as
# torch counts them), read before any call here changes it
ALL_THREADS = torch.get_num_threads()

# input ids, mask, flat positions of the real tokens -> hidden states (bert.py's Bert.__call__)
Encoder = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BatchPlan:
    """How many tokens (padded) and texts one forward pass may hold."""

    token_budget: int
    max_texts: int

    @classmethod
    def for_device(cls, device: torch.device) -> BatchPlan:
        # CPU: ~2k tokens keeps activations cache-resident (measured best of 512..16k here);
        # a GPU wants big batches to fill its SMs.
        if device.type == "cuda":
            return cls(token_budget=65536, max_texts=1024)
        return cls(token_budget=2048, max_texts=64)

    def batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Yield index lists, longest texts first, each within the budget once padded."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        start = 0
        while start < len(order):
            longest = lengths[order[start]]
            size = max(1, min(self.max_texts, self.token_budget // longest))
            yield order[start : start + size]
            start += size


def load_tokenizer(weights_dir: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(weights_dir / "tokenizer.json"))
    # The bundled tokenizer.json truncates and pads at 128; the model was trained for 256.
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.no_padding()
    return tokenizer


SCRIPT_FAILED = "The following operation failed in the TorchScript interpreter."


# A line of TorchScript's report that states the failing op's error; the traceback's own lines
# start with a path, and a C++ stack may follow (TORCH_SHOW_CPP_STACKTRACES=1).
OP_ERROR_LINE = re.compile(r"^\w*(?:Error|Exception): (.+)$", re.MULTILINE)


def op_error(error: RuntimeError) -> RuntimeError:
    """The failing op's own error out of TorchScript's report, a traceback of the trace with the
    op's error after it ("RuntimeError: index out of range in self"): a prediction that fails
    says that line, not the traceback; the whole report if no line states an error."""
    stated = OP_ERROR_LINE.search(str(error))
    return RuntimeError(stated.group(1) if stated else str(error))


class Embedder:
    """all-MiniLM-L6-v2 loaded from a weights folder onto one device, in one dtype."""

    def __init__(self, weights_dir: Path, device: torch.device, dtype: torch.dtype) -> None:
        self.device = device
        self.dtype = dtype
        self.tokenizer = load_tokenizer(weights_dir)
        config = BertConfig.from_json(json.loads((weights_dir / "config.json").read_text()))
        self.model = Bert(load_file(weights_dir / "model.safetensors"), config, device, dtype)
        self.plan = BatchPlan.for_device(device)
        self.encoder: Encoder = self._traced() if device.type == "cpu" else self.model

    def embed(self, texts: Sequence[str], normalize: bool = True) -> np.ndarray:
        """Return float32 [len(texts), 384] in input order."""
        return self.vectors(self.tokenize(texts), [normalize] * len(texts))

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, [CLS] and [SEP] included, truncated at MAX_TOKENS."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        return [e.ids for e in encodings]

    @torch.inference_mode()
    def vectors(self, token_ids: Sequence[list[int]], normalize: Sequence[bool]) -> np.ndarray:
        """Float32 [len(token_ids), 384] in input order; row i L2-normalised if normalize[i].

        The texts may come from several predictions (embedder/coalescer.py), each with its
        own `normalize`: pooling is per row, so sharing a forward pass changes no vector.
        """
        out = np.empty((len(token_ids), DIMENSIONS), dtype=np.float32)
        lengths = [len(ids) for ids in token_ids]
        self._use_threads(sum(lengths))
        for index in self.plan.batches(lengths):
            out[index] = self._forward([token_ids[i] for i in index]).cpu().numpy()
        wanted = np.asarray(normalize, dtype=np.bool_)
        norms = np.linalg.norm(out[wanted], axis=1, keepdims=True)
        out[wanted] /= np.maximum(norms, 1e-12)  # F.normalize's floor, as sentence-transformers
        return out

    def _forward(self, batch: list[list[int]]) -> torch.Tensor:
        """Mean-pooled float32 vectors of one batch (texts of any order)."""
        input_ids, mask, positions = self._inputs(batch)
        try:
            hidden = self.encoder(input_ids, mask, positions).float()
        except RuntimeError as exc:
            if not str(exc).startswith(SCRIPT_FAILED):
                raise
            raise op_error(exc) from exc
        weights = mask.unsqueeze(-1).float()
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    def _inputs(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The encoder's inputs on the device: ids padded to the longest, the real-token mask,
        and the mask's flat nonzero positions."""
        length = max(len(i) for i in batch)
        padded = np.zeros((len(batch), length), dtype=np.int64)
        real = np.zeros((len(batch), length), dtype=np.bool_)
        for row, token_ids in enumerate(batch):
            padded[row, : len(token_ids)] = token_ids
            real[row, : len(token_ids)] = True
        # The mask comes from lengths, not from id 0: a text may spell "[PAD]" itself.
        input_ids = self._to_device(torch.from_numpy(padded))
        mask = self._to_device(torch.from_numpy(real))
        # Found here, on the host: on a GPU, nonzero() on the mask would wait for the copy.
        positions = self._to_device(torch.from_numpy(np.flatnonzero(real)))
        return input_ids, mask, positions

    def _traced(self) -> Encoder:
        """The encoder as one TorchScript call, which holds no GIL while it runs. Eager, each
        of its ~100 torch ops lets go of the GIL and takes it back, and in the Cog server every
        prediction's threads (IPC, the event loop, JSON output) want it too: through the server
        at 32 clients, traced ran 341-356 one-query requests/s against 302-327 eager, and
        mixed sizes 264-282 texts/s against 229-231. Batch and length stay dynamic: the trace
        reads them from the input and nothing branches on them (tests run other shapes).
        torch.jit.trace is deprecated in favour of torch.compile, which needs a C++ compiler
        and tens of seconds at boot; torch is pinned. On CUDA (unmeasured) the eager encoder
        stays."""
        example = self._inputs(self.tokenize(["a trace example", "another"]))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit.trace` is deprecated", DeprecationWarning)
            with torch.inference_mode():
                # Its own check (check_trace) would cost 0.6 s of boot; tests compare the
                # traced encoder with the eager one at other shapes instead.
                traced: Encoder = torch.jit.trace(  # type: ignore[no-untyped-call]
                    self.model.__call__, example, check_trace=False
                )
        return traced

    def _use_threads(self, tokens: int) -> None:
        """On the CPU, a call of fewer real tokens than one pass's budget (2048) runs on one
        thread fewer than torch's default, leaving a core to the Cog server's own threads
        (HTTP, IPC, the event loop, JSON output), which want about one at a few hundred
        predictions/s. A small pass split across every core pays a barrier per op, and each
        waits for a thread the server has preempted, or one gone to sleep since the last pass.
        Traced encoder on both sides, 175 one-query requests/s through the server on 2 cores:
        p99 28-30 ms this way against 57-68 ms on two threads. A bigger call has the work per
        op to pay for every core."""
        if self.device.type != "cpu":
            return
        wanted = ALL_THREADS if tokens >= self.plan.token_budget else max(1, ALL_THREADS - 1)
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """On CUDA, copy through pinned memory (torch's caching host allocator keeps it) so
        the copy is a DMA queued behind the last batch's kernels, not a synchronous one."""
        if self.device.type != "cuda":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)
