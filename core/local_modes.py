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
from dataclasses import dataclass, field
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


@dataclass
class _Image:
    """One image's progress: its index, the stop check, the preview, when denoising ended."""

    request: GenerationRequest
    index: int
    report: Any  # (phase, **fields) → None
    should_stop: StopCheck | None
    previewer: Any = None  # core.preview.StepPreview, when a live preview is wanted
    tiles: int = 0
    compiling: bool = False  # a compiled load's first image: its first step compiles
    denoised_at: list[float] = field(default_factory=list)

    def on_step(self, step: int, steps: int) -> None:
        """After step `step` of the `steps` that run: Stop, and progress (unless the preview
        reports it, from `on_latents`, which sees the same step next)."""
        if self.should_stop is not None and self.should_stop():
            raise GenerationStopped(step, steps)
        if step == steps:
            self.denoised_at.append(time.perf_counter())
        if self.previewer is None:
            self._reported(step, steps, None)

    def on_latents(self, scheduler: Any, step: int, latents: Any) -> None:
        jpeg = self.previewer.update(scheduler, step, latents)
        self._reported(step, self.request.effective_steps, jpeg)

    def _reported(self, step: int, steps: int, jpeg: bytes | None) -> None:
        fields = {"image_index": self.index, "step": step, "preview": jpeg}
        self.report("denoising", **fields, compiling=self.compiling)
        if step == steps:  # the pipeline decodes right after the last step
            self.report("decoding", image_index=self.index, step=steps, tiles=self.tiles)


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
    first_image: Any = None,
) -> tuple[list[Any], list[float]]:
    """Make the request's images (one per seed) from its source, as `run_pipeline` does
    for text to image, with its `cache` key (a Vary after a generation encodes nothing),
    `lora_tag` and `first_image`; return (images, seconds per image). `pipe` is the loaded
    pipeline; `tiles`: the VAE decode's, for progress words."""
    import torch

    from core.preview import StepPreview

    started = time.perf_counter() if started is None else started
    total = request.effective_steps

    def report(phase: str, **fields: Any) -> None:
        if on_progress is not None:
            elapsed = time.perf_counter() - started
            n = request.num_images
            on_progress(Progress(phase, elapsed, num_images=n, total_steps=total, **fields))

    if should_stop is not None and should_stop():
        raise GenerationStopped(0, total)
    report("encoding")
    embeds, encode_seconds = _embeddings(pipe, request, cache, model, dtype, lora_tag)
    images, seconds = [], []
    for index, seed in enumerate(request.seeds):
        if should_stop is not None and should_stop():
            raise GenerationStopped(0, total)
        wanted = preview and on_progress is not None
        compiling = first_image is not None and first_image.pending
        one = _Image(request, index, report, should_stop, tiles=tiles, compiling=compiling)
        one.previewer = StepPreview(total_steps=total) if wanted else None
        if compiling:  # the first step compiles: say so rather than show a stalled step
            first_image.started()
            report("compiling", image_index=index, compiling=True)
        image_start = time.perf_counter()
        with torch.inference_mode():
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
        done = time.perf_counter()
        images.append(made.image)
        seconds.append(done - image_start)
        if compiling:
            first_image.finished()
        elif model and device and one.denoised_at and made.steps_run:
            denoised = one.denoised_at[0]
            SPEEDS.record(
                **{"model": model, "device": device, "encode_seconds": encode_seconds},
                width=request.width,
                height=request.height,
                step_seconds=(denoised - image_start) / made.steps_run,  # the steps that ran
                decode_seconds=done - denoised,
            )
    return images, seconds
