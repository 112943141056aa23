"""Make a real LoRA file for the tiny demo pipeline (tests, benchmarks, trying the feature).

A PEFT `LoraConfig` on copies of the demo transformer's attention projections (and, if
asked, of the first CLIP encoder), with random non-zero B matrices so it changes pixels,
saved by diffusers' own `StableDiffusion3Pipeline.save_lora_weights`: the diffusers SD3
format, with its adapter metadata (rank, alpha) in the safetensors header.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj")
CLIP_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")


def _adapter_state(model: Any, targets: Sequence[str], rank: int, alpha: float, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False
    )
    model = copy.deepcopy(model)  # the caller's model stays as it is
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # PEFT itself, not `model.add_adapter`: transformers 5.24's asks for PEFT >= 0.22.
        inject_adapter_in_model(config, model, adapter_name="made")
    state = get_peft_model_state_dict(model, adapter_name="made")
    return {k: v.detach().clone().contiguous() for k, v in state.items()}, config.to_dict()


def make_demo_lora(
    pipe: Any,
    path: str | Path,
    *,
    seed: int = 0,
    rank: int = 4,
    alpha: float | None = None,
    targets: Sequence[str] = ATTENTION,
    text_encoder: bool = False,
) -> Path:
    """Write a LoRA for `pipe`'s architecture to `path` (a `.safetensors` file); return it.

    `alpha` defaults to `2 * rank` (scale 2), so loading must honour the file's metadata to
    get the pixels diffusers gets from the file. `text_encoder` adds CLIP-L attention.
    """
    from diffusers import StableDiffusion3Pipeline

    path = Path(path)
    alpha = 2 * rank if alpha is None else alpha
    transformer, transformer_meta = _adapter_state(pipe.transformer, targets, rank, alpha, seed)
    extra: dict[str, Any] = {}
    if text_encoder:
        clip, clip_meta = _adapter_state(pipe.text_encoder, CLIP_ATTENTION, rank, alpha, seed + 1)
        extra = {"text_encoder_lora_layers": clip, "text_encoder_lora_adapter_metadata": clip_meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusion3Pipeline.save_lora_weights(
        path.parent,
        transformer_lora_layers=transformer,
        transformer_lora_adapter_metadata=transformer_meta,
        weight_name=path.name,
        **extra,
    )
    return path
