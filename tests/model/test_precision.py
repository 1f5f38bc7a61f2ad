"""MODEL_DTYPE: what `auto` picks on each kind of device, and bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from embedder import precision


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 {flags}\n")
    return path


@pytest.mark.parametrize(
    ("flags", "native"),
    [("avx512f avx512_bf16", True), ("amx_tile amx_bf16", True), ("avx2 avx512f", False)],
)
def test_native_bf16_detection(tmp_path: Path, flags: str, native: bool) -> None:
    assert precision.cpu_has_native_bf16(cpuinfo(tmp_path, flags)) is native


def test_unreadable_cpuinfo_means_no_bf16(tmp_path: Path) -> None:
    assert precision.cpu_has_native_bf16(tmp_path / "absent") is False


def test_auto_is_float16_on_cuda() -> None:
    assert precision.resolve_dtype("auto", torch.device("cuda")) is torch.float16


def test_auto_on_cpu_follows_the_hardware() -> None:
    expected = torch.bfloat16 if precision.cpu_has_native_bf16() else torch.float32
    assert precision.resolve_dtype("auto", torch.device("cpu")) is expected


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16", " Float32 "])
def test_explicit_dtypes(name: str) -> None:
    expected = precision.DTYPES[name.strip().lower()]
    assert precision.resolve_dtype(name, torch.device("cpu")) is expected


@pytest.mark.parametrize("name", ["fp32", "int8", ""])
def test_unknown_dtype_is_refused_with_the_choices(name: str) -> None:
    with pytest.raises(ValueError, match="auto, float32, bfloat16, float16"):
        precision.resolve_dtype(name, torch.device("cpu"))
