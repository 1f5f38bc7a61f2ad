"""Which dtype the encoder runs in: the `MODEL_DTYPE` setting and what `auto` means."""

from __future__ import annotations

import os
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}


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


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    """Map a MODEL_DTYPE value to a torch dtype; `auto` is fp16 on CUDA, bf16 on capable CPUs."""
    name = setting.strip().lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if name not in DTYPES:
        choices = ", ".join(["auto", *DTYPES])
        raise ValueError(f"MODEL_DTYPE={setting!r} is not one of: {choices}")
    return DTYPES[name]


def dtype_from_env() -> str:
    return os.environ.get("MODEL_DTYPE", "auto")
