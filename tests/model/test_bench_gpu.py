"""The model benchmark's GPU parts, on what this machine can show: nvidia-smi's
output format, the price a rate is read at, and a machine without a GPU."""

from __future__ import annotations

import pytest

from bench import gpu
from bench.model_concurrency import hardware


def test_nvidia_smi_lines_become_percentages_and_anything_else_is_skipped() -> None:
    output = "0\n37\n100\n[N/A]\nWARNING: infoROM is corrupted at gpu 0000:00:04.0\n"
    assert gpu.parse_samples(output) == [0.0, 37.0, 100.0]
    assert gpu.Utilisation([0.0, 37.0, 100.0, 3.0]).mean() == 35.0


@pytest.mark.skipif(gpu.present(), reason="a GPU machine: nvidia-smi samples for real there")
def test_without_a_gpu_a_load_is_measured_with_no_utilisation() -> None:
    with gpu.sampled() as utilisation:
        pass
    assert utilisation.samples == []
    assert utilisation.mean() is None


def test_a_rate_is_priced_as_the_hardware_it_was_measured_on() -> None:
    assert hardware(None) == ["CPU"]
    assert hardware("Tesla T4") == ["T4"]
    assert hardware("NVIDIA L40S") == ["L40S"]
    assert hardware("NVIDIA H100 80GB HBM3") == ["H100"]
    assert hardware("NVIDIA H200") == []  # not one of Replicate's priced cards
