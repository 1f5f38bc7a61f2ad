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
    chosen = precision.resolve_dtype("auto", torch.device("cpu"))
    if precision.cpu_has_native_bf16():
        assert chosen in (torch.bfloat16, torch.float32)  # as the probe measured
    else:
        assert chosen is torch.float32


@pytest.mark.parametrize(
    ("native", "speedup", "expected"),
    [
        (True, 3.0, torch.bfloat16),
        (True, precision.MIN_BF16_SPEEDUP, torch.bfloat16),
        (True, 1.1, torch.float32),  # listed, but not worth it: slower or barely faster
        (True, 0.6, torch.float32),
        (False, 5.0, torch.float32),  # emulated bf16 is never chosen
    ],
)
def test_auto_on_cpu_takes_bf16_only_where_it_measured_faster(
    native: bool, speedup: float, expected: torch.dtype
) -> None:
    assert precision.cpu_dtype(native, speedup) is expected


def test_the_probe_measures_a_ratio() -> None:
    speedup = precision.bf16_speedup(repeats=3)
    assert 0.01 < speedup < 100


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16", " Float32 "])
def test_explicit_dtypes(name: str) -> None:
    expected = precision.DTYPES[name.strip().lower()]
    assert precision.resolve_dtype(name, torch.device("cpu")) is expected


@pytest.mark.parametrize("name", ["fp32", "int8", ""])
def test_unknown_dtype_is_refused_with_the_choices(name: str) -> None:
    with pytest.raises(ValueError, match="auto, float32, bfloat16, float16"):
        precision.resolve_dtype(name, torch.device("cpu"))
