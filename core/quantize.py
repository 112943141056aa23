"""Quantize a loaded pipeline's components with torchao, and say how for the record.

`quantize_pipeline(pipe, {"text_encoder_3": "int8"})` swaps each `torch.nn.Linear` weight of
the named components for a torchao weight-only tensor in place (int8 on CPU and CUDA,
float8 on CUDA with compute capability ≥ 8.9); embeddings, norms and biases stay as loaded.
It works the same on a pipeline built in memory (the demo) and on one `from_pretrained`
read from a folder, which is why the app quantizes after loading rather than through
`from_pretrained(quantization_config=...)` (diffusers' and transformers' `TorchAoConfig` give
the same pixels on the tiny model; the CPU measurement in bench/quant_cpu.py compares their
memory). NF4 (bitsandbytes, CUDA only) has no in-place path here: `pretrained_nf4_config`
builds the `from_pretrained` argument instead.

The facts (`QuantFacts.label`, e.g. "t5:int8-weight-only(torchao 0.18.0)") go into each
history record, so "Regenerate & verify" compares like with like (`same_quantization`).
torch and torchao are imported inside the functions: the Hardware page may import this
module without them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.quant_plan import FP8_MIN_CAPABILITY, T5, TRANSFORMER, Machine

log = logging.getLogger(__name__)

# method → (torchao config name, the words records use)
METHODS = {
    "int8": ("Int8WeightOnlyConfig", "int8-weight-only"),
    "fp8": ("Float8WeightOnlyConfig", "float8-weight-only"),
    "fp8-dynamic": ("Float8DynamicActivationFloat8WeightConfig", "float8-dynamic"),
}
SHORT = {T5: "t5", TRANSFORMER: "transformer"}
UNQUANTIZED = "none"


class QuantizationError(RuntimeError):
    """A component cannot be quantized here; the message says why and what to set."""


@dataclass(frozen=True)
class QuantFacts:
    """How the loaded pipeline is quantized: component → method words, and the library."""

    components: dict[str, str] = field(default_factory=dict)
    library: str = ""  # "torchao 0.18.0"
    seconds: float = 0.0
    released_bytes: int = 0  # memory-mapped bf16 pages handed back while quantizing

    @property
    def label(self) -> str:
        """One string for records: "t5:int8-weight-only(torchao 0.18.0)", or "none"."""
        return quant_record(self.components, self.library)


def quant_record(components: Mapping[str, str], library: str) -> str:
    """The record string for `components` (name → method words) quantized by `library`."""
    if not components:
        return UNQUANTIZED
    order = [T5, TRANSFORMER]
    names = sorted(components, key=lambda n: (order.index(n) if n in order else 9, n))
    body = ",".join(f"{SHORT.get(n, n)}:{components[n]}" for n in names)
    return f"{body}({library})" if library else body


def same_quantization(recorded: str | None, current: str) -> tuple[bool, str]:
    """Whether an image recorded under `recorded` can be verified bit for bit now.

    Records from before quantization existed carry no value: they were made unquantized.
    Return (like with like, a sentence for the verify result).
    """
    was = recorded or UNQUANTIZED
    if was == current:
        return True, f"same quantization as recorded ({was})"
    return False, (
        f"recorded with quantization {was}, now {current}: quantized weights change pixels, "
        "so a difference is expected and is not a reproducibility failure"
    )


def torchao_version() -> str | None:
    """The installed torchao version, or None (without importing it)."""
    from importlib import metadata

    try:
        return metadata.version("torchao")
    except metadata.PackageNotFoundError:
        return None


def bitsandbytes_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def machine_for(device: str, dtype: str) -> Machine:
    """This machine's facts for the planner: capability of CUDA device 0, libraries present."""
    capability = None
    if device == "cuda":
        import torch

        capability = tuple(torch.cuda.get_device_capability(0))
    return Machine(
        device=device,
        dtype=dtype,
        capability=capability,
        torchao=torchao_version() is not None,
        bitsandbytes=bitsandbytes_installed(),
    )


def torchao_config(method: str) -> Any:
    """The torchao config for `method`, leaving torch's global inductor settings alone.

    torchao's configs default to `set_inductor_config=True`, which turns on coordinate-descent
    autotuning for every later `torch.compile` in the process (a much slower first image).
    """
    if method not in METHODS:
        raise QuantizationError(f"unknown quantization method {method!r}; use one of {METHODS}")
    import torchao.quantization as tq

    config_class = getattr(tq, METHODS[method][0])
    if method == "fp8-dynamic":
        return config_class(granularity=tq.PerRow(), set_inductor_config=False)
    return config_class(set_inductor_config=False)


def _check(method: str, device: str) -> None:
    if method.startswith("fp8"):
        import torch

        if device != "cuda" or not torch.cuda.is_available():
            raise QuantizationError(
                "float8 needs a CUDA GPU of compute capability ≥ 8.9; use int8 here."
            )
        if tuple(torch.cuda.get_device_capability(0)) < FP8_MIN_CAPABILITY:
            raise QuantizationError(
                "this GPU's compute capability is below 8.9: float8 matmuls are not supported; "
                "use int8."
            )
    if method == "nf4":
        raise QuantizationError(
            "NF4 loads through from_pretrained(quantization_config=pretrained_nf4_config(...))"
        )


def quantize_pipeline(
    pipe: Any,
    quant: Mapping[str, str],
    *,
    device: str | None = None,
    back_to_cpu: bool = False,
    release: bool = True,
) -> QuantFacts:
    """Quantize the named components of `pipe` in place; return the facts for the record.

    `quant` maps component names to methods ("int8", "fp8", "fp8-dynamic"); a component the
    pipeline does not hold (T5 dropped) is skipped. `device` ("cuda") moves each Linear
    there before quantizing it, so a GPU never holds a whole component in bf16; without it
    the weights are quantized where they are (CPU before `pipe.to("cuda")`, or in place).
    `back_to_cpu` returns each component to the CPU once quantized, for offload plans: the
    GPU does the arithmetic (much faster than the CPU) yet never holds more than one
    component, which is all an offload plan's GPU has room for.

    Linear by Linear, and with `release` the memory-mapped file pages of each replaced
    bf16 weight are handed back at once (`release_file_pages`): `from_pretrained` maps
    each safetensors file whole and the mapping lives as long as any tensor of the file
    (T5's embedding stays), so otherwise every page read while quantizing stayed resident
    (T5-XXL on the CPU: 9.4 GB of file pages beside its 4.9 GB of int8 weights).
    """
    if not quant:
        return QuantFacts()
    version = torchao_version()
    if version is None:
        raise QuantizationError("quantization needs torchao: pip install torchao")
    start = time.perf_counter()
    done: dict[str, str] = {}
    released = 0
    for name, method in quant.items():
        module = getattr(pipe, name, None)
        if module is None:
            continue
        _check(method, device or _device_of(module))
        released += _quantize_linears(module, torchao_config(method), device, release)
        if back_to_cpu and device not in (None, "cpu"):
            module.to("cpu")
            _empty_cache()
        done[name] = METHODS[method][1]
    seconds = time.perf_counter() - start
    facts = QuantFacts(
        components=done, library=f"torchao {version}", seconds=seconds, released_bytes=released
    )
    log.info("quantized %s in %.1f s (%.2f GB of mapped pages released)", facts.label, seconds,
             released / 1e9)  # fmt: skip
    return facts


def _quantize_linears(module: Any, config: Any, device: str | None, release: bool) -> int:
    """Quantize each Linear of `module`; release a replaced weight's file pages; return bytes."""
    import torch
    from torchao.quantization import quantize_

    owners: dict[int, int] = {}  # data pointer → how many tensors start there (tied weights)
    tensors = [
        *module.named_parameters(remove_duplicate=False),
        *module.named_buffers(remove_duplicate=False),
    ]
    for _, t in tensors:
        owners[t.data_ptr()] = owners.get(t.data_ptr(), 0) + 1
    mappings = file_mappings() if release else []
    released = 0
    for linear in [m for m in module.modules() if isinstance(m, torch.nn.Linear)]:
        old = linear.weight
        span = None
        if old.device.type == "cpu" and owners.get(old.data_ptr()) == 1:
            span = (old.data_ptr(), old.numel() * old.element_size())
        quantize_(linear, config, device=device)
        replaced = linear.weight is not old
        del old
        if span and replaced and mappings:
            released += release_file_pages(*span, mappings=mappings)
    return released


def file_mappings(suffix: str = ".safetensors") -> list[tuple[int, int]]:
    """(start, end) of this process's memory mappings of `suffix` files (Linux; else [])."""
    try:
        lines = open("/proc/self/maps").read().splitlines()  # noqa: SIM115
    except OSError:
        return []
    spans = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].endswith(suffix):
            start, _, end = fields[0].partition("-")
            spans.append((int(start, 16), int(end, 16)))
    return spans


def release_file_pages(address: int, size: int, *, mappings: list[tuple[int, int]]) -> int:
    """Drop the whole pages of [address, address + size) from this process's memory.

    Only inside a mapping of a weights file (`mappings`), never anonymous memory: for a
    file mapping `madvise(MADV_DONTNEED)` only unmaps the pages (the data stays in the
    file and the page cache, and a later read maps it again), whereas on anonymous memory
    it would zero them. The caller guarantees no live tensor uses the range. Return bytes.
    """
    import ctypes
    import os

    page = os.sysconf("SC_PAGE_SIZE")
    first = -(-address // page) * page  # whole pages only: neighbours keep the edges
    last = (address + size) // page * page
    if last <= first or not any(lo <= first and last <= hi for lo, hi in mappings):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madv_dontneed = 4
    if libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), madv_dontneed):
        return 0
    return last - first


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _device_of(module: Any) -> str:
    try:
        return next(module.parameters()).device.type
    except StopIteration:
        return "cpu"


def facts_of(pipe: Any) -> QuantFacts:
    """Read back how `pipe`'s components are quantized (what the weights really are)."""
    import torch

    version = torchao_version() or "?"
    found: dict[str, str] = {}
    for name in (T5, TRANSFORMER, "text_encoder_2", "text_encoder", "vae"):
        module = getattr(pipe, name, None)
        if not isinstance(module, torch.nn.Module):
            continue
        kinds = {
            type(m.weight).__name__
            for m in module.modules()
            if isinstance(m, torch.nn.Linear) and type(m.weight) is not torch.nn.Parameter
        }
        kinds.discard("Parameter")
        kinds.discard("Tensor")
        if kinds:
            found[name] = _words(kinds)
    return QuantFacts(components=found, library=f"torchao {version}" if found else "")


def _words(kinds: set[str]) -> str:
    if kinds == {"Int8Tensor"}:
        return METHODS["int8"][1]
    if kinds == {"Float8Tensor"}:
        return "float8"  # weight-only and dynamic share the tensor type
    return "+".join(sorted(kinds))


def pretrained_nf4_config(components: tuple[str, ...] = (T5, TRANSFORMER)) -> Any:
    """`from_pretrained(quantization_config=...)` for NF4 via bitsandbytes (CUDA only)."""
    import torch
    from diffusers import PipelineQuantizationConfig

    return PipelineQuantizationConfig(
        quant_backend="bitsandbytes_4bit",
        quant_kwargs={
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_compute_dtype": torch.bfloat16,
        },
        components_to_quantize=list(components),
    )
