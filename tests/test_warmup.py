"""The load-time warm-up for offload plans: it runs on the real tiny pipeline, pixels unchanged."""

from __future__ import annotations

import pytest
import torch

from core.demo import build_demo_pipeline
from core.generation import GenerationRequest
from core.local import load_pipeline, run_pipeline
from core.warmup import prefault_weights, warm_run
from tests.conftest import SMALL

REQUEST = GenerationRequest(prompt="a lighthouse on a cliff", seed=21, **SMALL)


def image(pipe) -> bytes:
    return run_pipeline(pipe, REQUEST)[0][0].tobytes()


def weight_bytes(pipe) -> int:
    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for t in [*component.parameters(), *component.buffers()]:
                total += t.numel() * t.element_size()
    return total


def test_prefault_touches_every_weight_and_changes_no_pixel(demo_dir, demo_pipe):
    """Every weight byte of a pipeline read from a folder is paged in; the image is the same."""
    pipe = load_pipeline(model=str(demo_dir), device="cpu", dtype="float32").pipe
    facts = prefault_weights(pipe)  # first, while every weight is still only mapped
    assert facts.bytes_touched == weight_bytes(pipe)
    assert facts.tensors > 100 and facts.seconds >= 0
    assert image(pipe) == image(demo_pipe)  # the same weights, the same image


def test_prefault_reaches_inside_quantized_weights():
    """torchao's int8 weights are walked through their inner tensors (data and scales)."""
    pytest.importorskip("torchao")
    from core.quantize import quantize_pipeline

    pipe = build_demo_pipeline().to(dtype=torch.float32)
    plain = prefault_weights(pipe).bytes_touched
    quantize_pipeline(pipe, {"text_encoder_3": "int8"})
    facts = prefault_weights(pipe)
    t5_linear = sum(
        m.weight.numel() for m in pipe.text_encoder_3.modules() if isinstance(m, torch.nn.Linear)
    )
    # float32 Linear weights (4 bytes) became int8 (1 byte) plus one scale per row.
    assert plain - 4 * t5_linear < facts.bytes_touched < plain - 2 * t5_linear


def test_warm_run_changes_no_pixel(demo_pipe):
    """A tiny throw-away generation at load leaves the next image exactly as without it."""
    warm = build_demo_pipeline().to(dtype=torch.float32)
    warm.set_progress_bar_config(disable=True)
    assert warm_run(warm) > 0
    assert image(warm) == image(demo_pipe)  # the same weights, never warmed


def test_offload_plan_pages_weights_in_at_load(demo_dir, monkeypatch):
    """Under an offload plan the loader pages every weight in before it says "loaded" (the
    status goes through "paging"), and the Hardware page's facts say how much. accelerate's
    hooks need a GPU, so the offload call itself is a no-op here: the wiring is the point."""
    import dataclasses

    from diffusers import StableDiffusion3Pipeline

    import core.local
    from core.download import LoadStatus

    real_plan = core.local._plan
    monkeypatch.setattr(
        core.local,
        "_plan",
        lambda *a, **k: dataclasses.replace(real_plan(*a, **k), offload="model"),
    )
    monkeypatch.setattr(StableDiffusion3Pipeline, "enable_model_cpu_offload", lambda *a, **k: 0)
    status = LoadStatus()
    loaded = load_pipeline(model=str(demo_dir), device="cpu", dtype="float32", status=status)
    assert status.phases[-1] == "paging"
    assert loaded.warm is not None and loaded.warm.bytes_touched == weight_bytes(loaded.pipe)
    assert loaded.facts().prefault_bytes == loaded.warm.bytes_touched
