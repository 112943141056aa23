"""Image-to-image ("vary") and inpaint on the loaded SD3 pipeline: one image per call.

The mode's pipeline is built from the loaded one with diffusers' `from_pipe`, sharing every
module (no second copy of the weights), with its own fresh scheduler (its step counters are
per call) and, for SLG, its own transformer stand-in (`core.slg`). Two diffusers 0.42.1
facts this module works around:

- `from_pipe(pipe)` without `dtype` casts the *shared* modules to float32 in place: a
  bfloat16 pipeline becomes float32 for every mode (twice the memory, other pixels).
  `mode_pipeline` always passes the loaded pipeline's own dtype.
- `StableDiffusion3InpaintPipeline` encodes with `(x − shift) · scale` but decodes with
  `x / scale`, dropping the VAE's `shift_factor` (diffusers issue #13611, item 1; PR #14671
  closed unmerged as of 0.42.1), which tints the repainted area. Inpaint runs with
  `output_type="latent"` and decodes as text-to-image and image-to-image do.

Prompt embeddings are encoded once on the loaded pipeline (`prompt_embeddings`, through the
same `core.prompt_cache` as text-to-image, so a "Vary" after a generation reuses them); the
img2img and inpaint pipelines accept `prompt_embeds`, `negative_prompt_embeds`,
`pooled_prompt_embeds` and `negative_pooled_prompt_embeds` like text-to-image.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.masks import DEFAULT_MASK_BLUR, blur_mask, is_empty, paste_back
from core.modes.img2img import DEFAULT_STRENGTH as IMG2IMG_STRENGTH
from core.modes.inpaint import DEFAULT_STRENGTH as INPAINT_STRENGTH
from core.modes.shared import MAX_STRENGTH, MIN_STRENGTH, steps_that_run
from core.quiet import DropMessage
from core.slg import SkipLayerGuidance, SkipLayerGuidedTransformer, slg_runs

log = logging.getLogger(__name__)

# diffusers class per mode, for the family declarations of issue 17 (`Family` pipelines).
SD3_PIPELINES = {
    "txt2img": "StableDiffusion3Pipeline",
    "img2img": "StableDiffusion3Img2ImgPipeline",
    "inpaint": "StableDiffusion3InpaintPipeline",
}
IMAGE_MODES = ("img2img", "inpaint")
DEFAULT_STRENGTH = {"img2img": IMG2IMG_STRENGTH, "inpaint": INPAINT_STRENGTH}

StepCallback = Callable[[int, int], None]  # (step done, counting from 1; steps that run)
# (the call's scheduler, step done counting from 1, that step's latents): a live preview.
LatentsCallback = Callable[[Any, int, Any], None]


class ModeError(ValueError):
    """A mode's inputs do not fit; the message says what to change."""


def check_strength(strength: float) -> float:
    if isinstance(strength, bool) or not isinstance(strength, int | float):
        raise ModeError(f"Strength must be a number in {MIN_STRENGTH:g}–{MAX_STRENGTH:g}.")
    if not math.isfinite(strength) or not MIN_STRENGTH <= strength <= MAX_STRENGTH:
        raise ModeError(f"Strength must be in {MIN_STRENGTH:g}–{MAX_STRENGTH:g}; got {strength!r}.")
    return float(strength)


# --- the mode's pipeline -----------------------------------------------------------------
# diffusers' `ModelMixin.to(dtype=...)` warns "modules … should be kept in float32: []" even
# when the list is empty, and `from_pipe` casts on every build: drop that one message there.
EMPTY_FP32_NOTE = "should be kept in float32: []"


def pipeline_dtype(pipe: Any) -> Any:
    """The one dtype of the loaded pipeline's modules (raise when they are mixed)."""
    import torch

    dtypes = {
        p.dtype
        for module in pipe.components.values()
        if isinstance(module, torch.nn.Module)
        for p in module.parameters()
    }
    if len(dtypes) != 1:
        raise ModeError(
            f"The loaded pipeline mixes dtypes {sorted(map(str, dtypes))}; `from_pipe` would "
            "cast every shared module to one of them. Load it in one dtype."
        )
    return dtypes.pop()


def mode_pipeline(
    pipe: Any,
    mode: str,
    *,
    guide: SkipLayerGuidedTransformer | None = None,
    class_name: str | None = None,
) -> Any:
    """The `mode` pipeline on `pipe`'s modules (`from_pipe`), for one call.

    Shares every module and tokenizer (same tensors: nothing is copied) and gets a fresh
    scheduler of the same config. With `guide` (SLG), the guide stands in for the
    transformer and wraps that fresh scheduler's `step`. `class_name` is the family's
    diffusers class for the mode.
    """
    import diffusers

    name = class_name or SD3_PIPELINES.get(mode)
    if name is None:
        raise ModeError(f"Unknown mode {mode!r}; known: {', '.join(SD3_PIPELINES)}.")
    cls = getattr(diffusers, name)
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    overrides: dict[str, Any] = {"scheduler": scheduler}
    if guide is not None:
        # Only this call's own scheduler object: the loaded pipeline's is left alone.
        scheduler.step = guide.wrap_step(scheduler.step)
        overrides["transformer"] = guide
    note_filter = DropMessage(EMPTY_FP32_NOTE)
    model_log = logging.getLogger("diffusers.models.modeling_utils")
    model_log.addFilter(note_filter)
    try:
        built = cls.from_pipe(pipe, dtype=pipeline_dtype(pipe), **overrides)
    finally:
        model_log.removeFilter(note_filter)
    built.set_progress_bar_config(disable=True)
    return built


# --- prompt embeddings -------------------------------------------------------------------
@dataclass(frozen=True)
class _Prompt:
    """What `core.prompt_cache` reads of a request."""

    prompt: str
    negative_prompt: str
    guidance_scale: float
    # Encoded on the loaded (text-to-image) pipeline's encoders, so cached under that
    # mode's key: a "Vary" right after a generation encodes nothing.
    mode: str = "txt2img"


def prompt_embeddings(
    pipe: Any,
    *,
    prompt: str,
    negative_prompt: str = "",
    guidance_scale: float,
    cache: Any = None,
    model: str = "",
    dtype: str = "",
    loras: str = "",
) -> dict[str, Any]:
    """The embedding keyword arguments for any SD3 mode's call, encoded once on the loaded
    pipeline (or taken from `cache`, a `core.prompt_cache.PromptCache`, under the same key
    text-to-image uses; `loras` names the LoRAs on the text encoders)."""
    import torch

    from core.prompt_cache import encode, prompt_key

    request = _Prompt(prompt, negative_prompt, float(guidance_scale))
    key = prompt_key(pipe, request, model=model, dtype=dtype, loras=loras)
    embeds = cache.get(key) if cache is not None else None
    if embeds is None:
        with torch.inference_mode():
            embeds = encode(pipe, request)
        if cache is not None:
            cache.put(key, embeds)
    return embeds


# --- one image ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModeImage:
    """One image made by a mode, and what ran."""

    image: Any  # the result (inpaint: pasted back onto the source)
    generated: Any  # what the pipeline made (inpaint: before the paste-back)
    steps_run: int  # denoising steps that ran (`steps_that_run`)
    slg_steps: int  # steps SLG ran on (0: off, or guidance off)
    seconds: float
    blurred_mask: Any = None  # inpaint: the blurred mask that went to the pipeline


def _decode_latents(pipe: Any, latents: Any) -> Any:
    """Latents to a PIL image as text-to-image decodes them (with the VAE's shift)."""
    vae = pipe.vae
    latents = latents / vae.config.scaling_factor + vae.config.shift_factor
    image = vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")[0]


def _check_inputs(mode: str, image: Any, mask: Any) -> None:
    """A known mode, and for inpaint a non-empty mask of the image's size (`ModeError`)."""
    if mode not in IMAGE_MODES:
        raise ModeError(f"Mode must be one of {', '.join(IMAGE_MODES)}; got {mode!r}.")
    if mode != "inpaint":
        return
    if mask is None:
        raise ModeError("Inpaint needs a mask: paint the area to repaint, or upload one.")
    if mask.size != image.size:
        raise ModeError(f"The mask is {mask.size}, the image {image.size}: same size needed.")
    if is_empty(mask):
        raise ModeError("The mask is empty: paint the area to repaint (white in a mask PNG).")


def run_image_mode(
    pipe: Any,
    *,
    mode: str,
    embeds: dict[str, Any],
    image: Any,
    seed: int,
    steps: int,
    guidance_scale: float,
    strength: float,
    mask: Any = None,
    mask_blur: int = DEFAULT_MASK_BLUR,
    slg: SkipLayerGuidance | None = None,
    on_step: StepCallback | None = None,
    class_name: str | None = None,
    on_latents: LatentsCallback | None = None,
) -> ModeImage:
    """Make one image-to-image or inpaint image with a CPU generator seeded with `seed`.

    `image` is the source (RGB, at a valid size: `core.images`); the output has its size.
    Inpaint: `mask` ("L", 255 = repaint) at the same size is blurred by `mask_blur` px, the
    blurred mask goes to the pipeline, and the result is pasted back through it
    (`core.masks.paste_back`). `on_step(k, n)` is called after step k of the n that run;
    an exception raised there stops the call. `on_latents(scheduler, k, latents)` sees
    each step's latents (a live preview; it must not change them). SLG runs only with
    guidance on.
    """
    import torch

    _check_inputs(mode, image, mask)
    strength = check_strength(strength)
    width, height = image.size
    n = steps_that_run(steps, strength)
    guided = None
    if slg_runs(slg, guidance_scale):
        guided = SkipLayerGuidedTransformer(
            pipe.transformer, slg, guidance_scale=guidance_scale, steps_run=n
        )
    run = mode_pipeline(pipe, mode, guide=guided, class_name=class_name)

    def step_end(_pipe: Any, step: int, _t: Any, _kwargs: dict) -> dict:
        if on_step is not None:
            on_step(step + 1, n)
        if on_latents is not None:
            on_latents(_pipe.scheduler, step + 1, _kwargs["latents"])
        return {}

    kwargs: dict[str, Any] = {
        **embeds,
        "image": image,
        "strength": strength,
        "num_inference_steps": steps,
        "guidance_scale": float(guidance_scale),
        "width": width,
        "height": height,
        "callback_on_step_end": step_end,
    }
    blurred = None
    if mode == "inpaint":
        blurred = blur_mask(mask, mask_blur)  # A1111 hands the blurred mask to the sampler
        kwargs.update(mask_image=blurred, output_type="latent")
    start = time.perf_counter()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.inference_mode():
        output = run(**kwargs, generator=generator)
        generated = output.images[0]
        if mode == "inpaint":
            generated = _decode_latents(pipe, output.images)
    final = paste_back(generated, image, blurred) if mode == "inpaint" else generated
    return ModeImage(
        image=final,
        generated=generated,
        steps_run=n,
        slg_steps=guided.slg_steps if guided is not None else 0,
        seconds=time.perf_counter() - start,
        blurred_mask=blurred,
    )
