"""The local backend's run of the modes that work on an image: Vary (image to image),
Inpaint and Upscale, one image per seed on the loaded pipeline's modules.

`core.image_modes` and `core.upscale` do the pipeline work (from_pipe on the shared
modules with the loaded dtype, SLG for every mode, the inpaint decode with the VAE's
shift and the paste-back); this module turns a `GenerationRequest` into those calls with
the same progress phases, Stop, live preview and speed records as text to image
(`core.local.run_pipeline`). Progress and the estimate count the steps that really run.
"""

from __future__ import annotations

import time
from typing import Any

from core import slg as skip_layers
from core.estimate import SPEEDS
from core.generation import (
    GenerationRequest,
    GenerationStopped,
    Progress,
    ProgressCallback,
    StopCheck,
)
from core.models import Family
from core.prompt_cache import PromptCache


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
) -> tuple[list[Any], list[float]]:
    """Make the request's images (one per seed) from its source, as `run_pipeline` does
    for text to image; return (images, seconds per image).

    `pipe` is the loaded (text-to-image) pipeline: each call builds the mode's pipeline on
    its modules. The prompt is encoded once (or taken from `cache`, under text to image's
    key: a Vary after a generation encodes nothing). `tiles` is what the VAE decode splits
    into (for the progress words).
    """
    import torch

    from core.image_modes import prompt_embeddings, run_image_mode
    from core.preview import StepPreview
    from core.upscale import run_upscale

    started = time.perf_counter() if started is None else started
    total = request.effective_steps
    options = request.mode_options

    def report(phase: str, **fields: Any) -> None:
        if on_progress is not None:
            elapsed = time.perf_counter() - started
            on_progress(
                Progress(phase, elapsed, num_images=request.num_images, total_steps=total, **fields)
            )

    if should_stop is not None and should_stop():
        raise GenerationStopped(0, total)
    encode_start = time.perf_counter()
    hits = cache.hits if cache is not None else 0
    report("encoding")
    embeds = prompt_embeddings(
        pipe,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        guidance_scale=request.guidance_scale,
        cache=cache,
        model=model,
        dtype=dtype,
    )
    encoded = cache is None or cache.hits == hits  # not from the cache: this was timed
    encode_seconds = time.perf_counter() - encode_start if encoded else None
    source = request.source.image("RGB")  # type: ignore[union-attr]
    mask = request.mask.image("L") if request.mask is not None else None
    guide = skip_layers.from_option(options.get("slg"))
    class_name = family.pipeline_name(request.mode)
    images, seconds = [], []
    for index, seed in enumerate(request.seeds):
        marks: list[float] = []
        previewer = StepPreview(total_steps=total) if preview and on_progress else None

        def on_step(
            step: int, steps: int, index: int = index, marks: list = marks, previewer=previewer
        ) -> None:
            if should_stop is not None and should_stop():
                raise GenerationStopped(step, steps)
            if step == steps:
                marks.append(time.perf_counter())
            if previewer is None:  # else reported with the preview, from on_latents
                reported(step, steps, index, None)

        def on_latents(
            scheduler: Any, step: int, latents: Any, index: int = index, previewer=previewer
        ) -> None:
            jpeg = previewer.update(scheduler, step, latents)  # type: ignore[union-attr]
            reported(step, total, index, jpeg)

        def reported(step: int, steps: int, index: int, jpeg: bytes | None) -> None:
            report("denoising", image_index=index, step=step, preview=jpeg)
            if step == steps:  # the pipeline decodes right after the last step
                report("decoding", image_index=index, step=steps, tiles=tiles)

        if should_stop is not None and should_stop():
            raise GenerationStopped(0, total)
        image_start = time.perf_counter()
        common = {
            "embeds": embeds,
            "seed": seed,
            "steps": request.num_inference_steps,
            "guidance_scale": request.guidance_scale,
            "strength": options["strength"],
            "slg": guide,
            "on_step": on_step,
            "class_name": class_name,
            "on_latents": on_latents if previewer is not None else None,
        }
        with torch.inference_mode():
            if request.mode == "upscale":
                made = run_upscale(
                    pipe,
                    image=source,
                    factor=float(options["factor"]),
                    max_side=family.sizes.max,
                    multiple=family.sizes.multiple,
                    **common,
                ).result
            else:
                made = run_image_mode(
                    pipe,
                    mode=request.mode,
                    image=source,
                    mask=mask,
                    mask_blur=int(options.get("mask_blur", 0)),
                    **common,
                )
        done = time.perf_counter()
        images.append(made.image)
        seconds.append(done - image_start)
        if model and device and marks and made.steps_run:
            SPEEDS.record(
                model=model,
                device=device,
                width=request.width,
                height=request.height,
                step_seconds=(marks[0] - image_start) / made.steps_run,
                decode_seconds=done - marks[0],
                encode_seconds=encode_seconds,
            )
    return images, seconds
