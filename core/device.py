"""Pick the device and dtype: MPS → CUDA → CPU, each overridable by a setting.

torch is imported inside the functions so that rendering a page never pays for it.
"""

from __future__ import annotations

import logging
import platform
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    """The requested device or dtype cannot be used on this machine."""


@dataclass(frozen=True)
class DeviceChoice:
    """The device and dtype the pipeline runs with, and why each was chosen."""

    device: str
    dtype: str
    device_reason: str
    dtype_reason: str

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Return whether the CPU computes bfloat16 natively (AVX512-BF16, AMX or Arm BF16)."""
    flags = _cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16", "bf16"}:
        return True
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"],
                capture_output=True,
                text=True,
                timeout=2,
                check=False,
            ).stdout.strip()
        except OSError:
            return False
        return out == "1"
    return False


def _mps_available() -> bool:
    import torch

    return bool(torch.backends.mps.is_available())


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def choose_device(requested: str = "auto", dtype: str = "auto") -> DeviceChoice:
    """Return the device and dtype to use; raise `DeviceError` for an impossible choice."""
    if requested == "auto":
        if _mps_available():
            device, device_reason = "mps", "auto: Apple GPU (MPS) available"
        elif _cuda_available():
            device, device_reason = "cuda", "auto: CUDA GPU available"
        else:
            device, device_reason = "cpu", "auto: no MPS or CUDA GPU found"
    else:
        available = {"cpu": True, "cuda": _cuda_available, "mps": _mps_available}
        check = available.get(requested)
        if check is None:
            raise DeviceError(f"SD_DEVICE={requested!r} is unknown; use auto, cpu, cuda or mps.")
        if check is not True and not check():
            raise DeviceError(
                f"SD_DEVICE={requested} but this machine has no {requested.upper()} device "
                "that torch can use. Set SD_DEVICE=auto (or cpu)."
            )
        device, device_reason = requested, "set by SD_DEVICE"

    if dtype != "auto":
        if device == "cpu" and dtype == "float16":
            log.warning("float16 on CPU is hundreds of times slower than float32 here")
        return DeviceChoice(device, dtype, device_reason, "set by SD_DTYPE")
    if device == "mps":
        return DeviceChoice(device, "float16", device_reason, "auto: float16 on Apple GPUs")
    if device == "cuda":
        return DeviceChoice(device, "bfloat16", device_reason, "auto: bfloat16 on CUDA")
    if cpu_has_native_bf16():
        return DeviceChoice(
            device, "bfloat16", device_reason, "auto: this CPU computes bfloat16 natively"
        )
    return DeviceChoice(
        device,
        "float32",
        device_reason,
        "auto: this CPU has no native bfloat16; float16 on CPU is hundreds of times slower",
    )
