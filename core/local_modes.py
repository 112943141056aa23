"""The local backend's run of the modes that work on an image: Vary (image to image),
Inpaint and Upscale, one image per seed on the loaded pipeline's modules.

`core.image_modes` and `core.upscale` do the pipeline work (from_pipe on the shared
modules with the loaded dtype, SLG for every mode, the inpaint decode with the VAE's
shift and the paste-back); this module turns a `GenerationRequest` into those calls with
the same loop around each image as text to image (`core.seed_loop.run_seeds`: progress
phases, Stop, live preview, speed records). Progress and the estimate count the steps that
really run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from core import slg as skip_layers
from core.generation import GenerationRequest, GenerationStopped, ProgressCallback, StopCheck
from core.models import Family
from core.prompt_cache import PromptCache
from core.seed_loop import ImageProgress, reporter, run_seeds

if TYPE_CHECKING:
    from core.compile import FirstImage


def _made(pipe: Any, request: GenerationRequest, family: Family, **common: Any) -> Any:
    """One image of `request` (`core.image_modes.ModeImage`): Upscale resizes first."""
    from core.image_modes import run_image_mode
    from core.upscale import run_upscale

    options = request.mode_options
    source = request.source.image("RGB")  # type: ignore[union-attr]
    if request.mode == "upscale":
        return run_upscale(
            pipe,
            image=source,
            factor=float(options["factor"]),
            max_side=family.sizes.max,
            multiple=family.sizes.multiple,
            **common,
        ).result
    mask = request.mask.image("L") if request.mask is not None else None
    return run_image_mode(
        pipe,
        mode=request.mode,
        image=source,
        mask=mask,
        mask_blur=int(options.get("mask_blur", 0)),
        **common,
    )


def _embeddings(
    pipe: Any,
    request: GenerationRequest,
    cache: PromptCache | None,
    model: str,
    dtype: str,
    lora_tag: str,
) -> tuple[dict[str, Any], float | None]:
    """The prompt's embeddings, and the seconds encoding took (None: from the cache)."""
    from core.image_modes import prompt_embeddings

    start, hits = time.perf_counter(), cache.hits if cache is not None else 0
    embeds = prompt_embeddings(
        pipe,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        guidance_scale=request.guidance_scale,
        cache=cache,
        model=model,
        dtype=dtype,
        loras=lora_tag,
    )
    encoded = cache is None or cache.hits == hits
    return embeds, time.perf_counter() - start if encoded else None


def run_image_request(
    pipe: Any,
    request: GenerationRequest,
    *,
    family: Family,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    started: float | None = None,
    preview: bool = False,
    cache: PromptCache | None = None,
    model: str = "",
    device: str = "",
    dtype: str = "",
    tiles: int = 0,
    lora_tag: str = "",
    first_image: FirstImage | None = None,
) -> tuple[list[Any], list[float]]:
    """Make the request's images (one per seed) from its source, as `run_pipeline` does
    for text to image (the same loop: `core.seed_loop.run_seeds`), with its `cache` key (a
    Vary after a generation encodes nothing), `lora_tag` and `first_image`; return (images,
    seconds per image). `pipe` is the loaded pipeline; `tiles`: the VAE decode's, for
    progress words."""
    started = time.perf_counter() if started is None else started
    report = reporter(on_progress, started, request)
    if should_stop is not None and should_stop():
        raise GenerationStopped(0, request.effective_steps)
    report("encoding")
    embeds, encode_seconds = _embeddings(pipe, request, cache, model, dtype, lora_tag)

    def make_one(seed: int, one: ImageProgress) -> tuple[Any, int]:
        made = _made(
            pipe,
            request,
            family,
            embeds=embeds,
            seed=seed,
            steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            strength=request.mode_options["strength"],
            slg=skip_layers.from_option(request.mode_options.get("slg")),
            on_step=one.on_step,
            class_name=family.pipeline_name(request.mode),
            on_latents=one.on_latents if one.previewer is not None else None,
        )
        return made.image, made.steps_run

    return run_seeds(
        request,
        make_one,
        report=report,
        should_stop=should_stop,
        preview=preview and on_progress is not None,
        first_image=first_image,
        tiles=tiles,
        model=model,
        device=device,
        encode_seconds=encode_seconds,
    )
