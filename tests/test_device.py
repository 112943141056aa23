"""Device and dtype: MPS → CUDA → CPU, per-device dtypes, explicit choices win."""

import pytest
import torch

from core import device as device_mod
from core.device import DeviceError, choose_device


@pytest.fixture(name="accelerators")
def fixture_accelerators(monkeypatch):
    """Set which accelerators torch reports (the one boundary patched here)."""

    def set_available(*, mps: bool, cuda: bool, bf16_cpu: bool = True):
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: bf16_cpu)

    return set_available


def test_mps_when_available(accelerators):
    """An Apple GPU is chosen first, in float16."""
    accelerators(mps=True, cuda=False)
    choice = choose_device()
    assert (choice.device, choice.dtype) == ("mps", "float16")
    assert choice.torch_dtype is torch.float16


def test_mps_has_priority_over_cuda(accelerators):
    """With both present, MPS wins (the plan's order)."""
    accelerators(mps=True, cuda=True)
    assert choose_device().device == "mps"


def test_cuda_when_mps_unavailable(accelerators):
    """CUDA runs in bfloat16."""
    accelerators(mps=False, cuda=True)
    choice = choose_device()
    assert (choice.device, choice.dtype) == ("cuda", "bfloat16")


def test_cpu_uses_bfloat16_with_native_support(accelerators):
    """A CPU with native bf16 runs in bfloat16, never float16."""
    accelerators(mps=False, cuda=False, bf16_cpu=True)
    assert (choose_device().device, choose_device().dtype) == ("cpu", "bfloat16")


def test_cpu_falls_back_to_float32(accelerators):
    """A CPU without native bf16 runs in float32, and says why float16 is avoided."""
    accelerators(mps=False, cuda=False, bf16_cpu=False)
    choice = choose_device()
    assert choice.dtype == "float32"
    assert "float16" in choice.dtype_reason


def test_explicit_dtype_wins(accelerators):
    """SD_DTYPE overrides the automatic choice."""
    accelerators(mps=False, cuda=True)
    choice = choose_device("auto", "float32")
    assert (choice.device, choice.dtype, choice.dtype_reason) == (
        "cuda",
        "float32",
        "set by SD_DTYPE",
    )


def test_impossible_device_is_a_clear_error(accelerators):
    """Asking for CUDA without CUDA raises with the fix."""
    accelerators(mps=False, cuda=False)
    with pytest.raises(DeviceError, match="SD_DEVICE=auto"):
        choose_device("cuda")


def test_cpu_bf16_detection_matches_this_machine():
    """The bf16 probe agrees with /proc/cpuinfo on this machine."""
    flags = device_mod._cpu_flags()
    expected = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    assert device_mod.cpu_has_native_bf16() is expected or not flags
