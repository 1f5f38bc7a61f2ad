"""Which dtype the encoder runs in: the `MODEL_DTYPE` setting and what `auto` means."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}
# bf16 must beat fp32 by this much on the probe: the encoder also does work bf16 does not
# speed up (tokenizing, softmax, pooling, the conversions themselves).
MIN_BF16_SPEEDUP = 1.25
# The probe: the encoder's feed-forward matmul (all-MiniLM-L6-v2: 384 wide, 1536 inside) on a
# batch's worth of tokens.
_PROBE_ROWS = 256
_HIDDEN = 384
_FEED_FORWARD = 1536


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512_BF16 or AMX).

    Without it oneDNN emulates bf16 and runs slower than fp32, so `auto` must not pick it.
    Where /proc/cpuinfo does not exist (macOS, Windows) we cannot tell: answer False.
    """
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_BF16_CPU_FLAGS & set(line.split(":", 1)[-1].split()))
    return False


def bf16_speedup(repeats: int = 15) -> float:
    """How many times faster this CPU runs the probe matmul in bf16 than in fp32 (best of
    `repeats` each, interleaved; some 20 ms in all).

    Why measure: the flags do not tell. Two Intel Xeons here both list AVX512_BF16 and AMX;
    on one (2026-11-25) the encoder ran 107 texts/s in bf16 against 171/s in fp32, on the other
    (2026-12-07) the probe ran 3-7x faster in bf16 and the encoder 3.9x the fp32 baseline.
    """
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(_PROBE_ROWS, _HIDDEN, generator=generator)
    weight = torch.randn(_FEED_FORWARD, _HIDDEN, generator=generator)
    operands = {
        dtype: (rows.to(dtype), weight.to(dtype)) for dtype in (torch.float32, torch.bfloat16)
    }
    best = dict.fromkeys(operands, math.inf)
    with torch.inference_mode():
        for _ in range(repeats):
            for dtype, (left, right) in operands.items():
                started = time.perf_counter()
                torch.nn.functional.linear(left, right)
                best[dtype] = min(best[dtype], time.perf_counter() - started)
    return best[torch.float32] / best[torch.bfloat16]


def cpu_dtype(native_bf16: bool, speedup: float) -> torch.dtype:
    """`auto` on a CPU: bf16 only where the hardware has it and it measured faster."""
    if native_bf16 and speedup >= MIN_BF16_SPEEDUP:
        return torch.bfloat16
    return torch.float32


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    """Map a MODEL_DTYPE value to a torch dtype; `auto` is fp16 on CUDA, and on a CPU bf16
    where it has bf16 instructions and they measured faster than fp32, else fp32."""
    name = setting.strip().lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.float16
        native = cpu_has_native_bf16()
        return cpu_dtype(native, bf16_speedup() if native else 0.0)
    if name not in DTYPES:
        choices = ", ".join(["auto", *DTYPES])
        raise ValueError(f"MODEL_DTYPE={setting!r} is not one of: {choices}")
    return DTYPES[name]


def dtype_from_env() -> str:
    return os.environ.get("MODEL_DTYPE", "auto")
