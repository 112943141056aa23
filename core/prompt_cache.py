"""Encode a prompt once per request, and keep the last few encodings for the next requests.

SD3 runs three text encoders per call (T5-XXL's first call took 8.6–12.3 s on a 2-core CPU);
one pipeline call per seed used to encode the same prompt `num_images` times. Exploring
seeds for one prompt is the common case, so the last few encodings are kept, keyed by
everything that changes them. The pipeline is then called with `prompt_embeds`, which
gives the same pixels as passing the prompt (same `encode_prompt`, same arguments).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MAX_ENTRIES = 4
# StableDiffusion3Pipeline.__call__'s default, used by the app.
MAX_SEQUENCE_LENGTH = 256


@dataclass(frozen=True)
class PromptKey:
    """Everything that changes the embeddings of one prompt."""

    prompt: str
    negative_prompt: str  # "" when CFG is off: the pipeline ignores it then
    cfg: bool  # guidance_scale > 1: the negative embeddings are made too
    model: str
    dtype: str
    drop_t5: bool
    max_sequence_length: int = MAX_SEQUENCE_LENGTH
    pipe_id: int = 0  # the pipeline object: a reload makes new encoders
    # The generation mode (core.modes): each mode's pipeline encodes for itself, so one
    # mode's embeddings are never handed to another's call (they share the encoders
    # today; a mode that encodes differently needs no change here).
    mode: str = "txt2img"
    # The LoRAs on the CLIP encoders while encoding (`core.lora.AppliedLoras.cache_tag`:
    # short hash and weight of each; "" when no LoRA adapts them): another LoRA or weight
    # encodes the same prompt differently.
    loras: str = ""


class PromptCache:
    """A small thread-safe LRU of prompt embeddings (tensors, read-only once stored)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[PromptKey, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: PromptKey) -> dict[str, Any] | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: PromptKey, value: dict[str, Any]) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def prompt_key(
    pipe: Any, request: Any, *, model: str = "", dtype: str = "", loras: str = ""
) -> PromptKey:
    cfg = request.guidance_scale > 1
    return PromptKey(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt if cfg else "",
        cfg=cfg,
        model=model,
        dtype=dtype,
        drop_t5=getattr(pipe, "text_encoder_3", None) is None,
        pipe_id=id(pipe),
        mode=request.mode,
        loras=loras,
    )


def encode(pipe: Any, request: Any) -> dict[str, Any]:
    """Run the pipeline's own `encode_prompt` as its `__call__` would for this request.

    Return the keyword arguments that replace `prompt`/`negative_prompt` in the call.
    """
    cfg = request.guidance_scale > 1
    positive, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=request.prompt,
        prompt_2=None,
        prompt_3=None,
        negative_prompt=request.negative_prompt,
        do_classifier_free_guidance=cfg,
        device=pipe._execution_device,
        clip_skip=None,
        num_images_per_prompt=1,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )
    embeds = {"prompt_embeds": positive, "pooled_prompt_embeds": pooled}
    if cfg:
        embeds["negative_prompt_embeds"] = negative
        embeds["negative_pooled_prompt_embeds"] = negative_pooled
    return embeds
