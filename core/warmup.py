""" "Loaded" means loaded: page every CPU-held weight in at load, not during the first image.

`from_pretrained` memory-maps the safetensors files: a weight is read from the page cache
(or the disk) the first time something touches it. Under model offload the weights stay in
RAM and move to the GPU when their component runs, so the first image after load paid for
paging all of them in (H200, model offload: 21.1 s for the first image, 6.1 s for the next;
on the CPU here T5's first call took 8.6–12.3 s against 2.3–5.2 s for the second).

`prefault_weights(pipe)` touches one byte of every memory page of every CPU tensor (the
inner tensors of torchao's quantized weights included), so the kernel maps them all at
load; the tensors themselves are not copied or changed, so memory stays what it was (the
pages are the same file-backed pages the first image would have mapped) and the pixels are
the same. `warm_run(pipe)` goes further where kernels also need warming: one tiny
generation (64², 1 step) through the pipeline's own offload hooks, discarded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

PAGE_BYTES = 4096


@dataclass(frozen=True)
class WarmFacts:
    """What a warm-up did: bytes of CPU weights touched, in how many tensors, how long."""

    bytes_touched: int
    tensors: int
    seconds: float


def _inner(tensor: Any) -> list[Any]:
    """A torchao-style subclass's plain tensors (`__tensor_flatten__`), or the tensor itself."""
    import torch

    if type(tensor) in (torch.Tensor, torch.nn.Parameter) or not hasattr(
        tensor, "__tensor_flatten__"
    ):
        return [tensor]
    names, _ = tensor.__tensor_flatten__()
    out = []
    for name in names:
        out.extend(_inner(getattr(tensor, name)))
    return out


def _touch(tensor: Any) -> int:
    """Read one byte per page of a CPU tensor's memory; return its bytes (0 if skipped)."""
    import torch

    t = tensor.detach()
    if t.device.type != "cpu" or t.numel() == 0:
        return 0
    if type(t) is not torch.Tensor:  # a Parameter's detach is a plain tensor; be sure
        t = t.as_subclass(torch.Tensor)
    if not t.is_contiguous() or t.dtype == torch.bool:
        t.float().sum() if t.is_floating_point() else t.sum()
        return t.numel() * t.element_size()
    raw = t.reshape(-1).view(torch.uint8)
    # One read 4096 bytes apart lands once in every page the tensor spans, plus the last byte.
    raw[::PAGE_BYTES].sum()
    raw[-1:].sum()
    return raw.numel()


def prefault_weights(pipe: Any) -> WarmFacts:
    """Map every CPU weight and buffer of every component into memory now (see above)."""
    import torch

    start = time.perf_counter()
    touched = count = 0
    seen: set[int] = set()
    with torch.inference_mode():
        for component in pipe.components.values():
            if not isinstance(component, torch.nn.Module):
                continue
            for tensor in [*component.parameters(), *component.buffers()]:
                for inner in _inner(tensor):
                    key = inner.data_ptr() if inner.device.type == "cpu" else id(inner)
                    if key in seen:  # tied weights: once
                        continue
                    seen.add(key)
                    got = _touch(inner)
                    touched += got
                    count += 1 if got else 0
    facts = WarmFacts(bytes_touched=touched, tensors=count, seconds=time.perf_counter() - start)
    log.info(
        "paged in %.2f GB of weights (%d tensors) in %.1f s",
        touched / 1e9,
        count,
        facts.seconds,
    )
    return facts


def warm_run(pipe: Any, *, size: int = 64, steps: int = 1) -> float:
    """One tiny generation through the pipeline (offload hooks and all); return seconds.

    It runs every component once, so each one's weights and kernels are in place. The
    pipeline's state afterwards is as before (a fresh generator; the scheduler resets its
    timesteps on every call), so the next image's pixels do not change.
    """
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        pipe(
            prompt="",
            negative_prompt="",
            width=size,
            height=size,
            num_inference_steps=steps,
            guidance_scale=1.0,  # one branch is enough to run every component
            generator=torch.Generator(device="cpu").manual_seed(0),
        )
    return time.perf_counter() - start
