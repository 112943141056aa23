"""One image per seed, the same way for every mode of the local backend.

Text to image (`core.local.run_pipeline`) and the modes that work on an image
(`core.local_modes.run_image_request`) differ only in how one image is made; this module
holds what they share around it: the Stop check before each image, the progress phases
(compiling → denoising step k/n → decoding), the live preview, the first compiled image's
label, the seconds per image and the speed record the estimate learns from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.compile import CompileShapes, FirstImage
from core.estimate import SPEEDS
from core.generation import (
    GenerationRequest,
    GenerationStopped,
    Progress,
    ProgressCallback,
    StopCheck,
)

Report = Callable[..., None]  # (phase, **Progress fields) → None


@dataclass
class ImageProgress:
    """One image's progress: its index, the stop check, the preview, when denoising ended.

    The mode's step callback calls `on_step(k, n)` after step k of the n that run, then,
    with a preview wanted, `on_latents(scheduler, k, latents)`.
    """

    request: GenerationRequest
    index: int
    report: Report
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


def reporter(
    on_progress: ProgressCallback | None, started: float, request: GenerationRequest
) -> Report:
    """`report(phase, **fields)`: a `Progress` of `request` to `on_progress` (if any)."""

    def report(phase: str, **fields: Any) -> None:
        if on_progress is not None:
            elapsed = time.perf_counter() - started
            on_progress(
                Progress(
                    phase,
                    elapsed,
                    num_images=request.num_images,
                    total_steps=request.effective_steps,
                    **fields,
                )
            )

    return report


def compile_shapes(request: GenerationRequest) -> CompileShapes:
    """What the compiled transformer blocks see of `request`'s images: its output size and
    batch sizes (CFG runs a batch of 2 when guidance > 1, as in diffusers; SLG adds a pass
    of 1 on the steps where it runs)."""
    from core.slg import from_option, slg_runs

    guided = request.guidance_scale > 1
    batches = {2} if guided else {1}
    slg = from_option(request.mode_options.get("slg"))
    if slg_runs(slg, request.guidance_scale) and slg.step_indices(request.effective_steps):
        batches.add(1)
    return CompileShapes(pixels=request.width * request.height, batches=frozenset(batches))


MakeOne = Callable[[int, ImageProgress], tuple[Any, int]]  # (seed, progress) → (image, steps run)


def run_seeds(
    request: GenerationRequest,
    make_one: MakeOne,
    *,
    report: Report,
    should_stop: StopCheck | None = None,
    preview: bool = False,
    first_image: FirstImage | None = None,
    tiles: int = 0,
    model: str = "",
    device: str = "",
    encode_seconds: float | None = None,
) -> tuple[list[Any], list[float]]:
    """Make one image per seed of `request` with `make_one` under `torch.inference_mode()`;
    return (images, seconds per image).

    Stop is checked before each image (and by `ImageProgress.on_step` after each step).
    When `first_image` says an image compiles (the first after a compiled load, a new size
    or guidance on/off: `FirstImage.compiles`), the phase reads "compiling" with its words
    until the first step ends, and that image records no speed. Otherwise, with `model` and `device`
    set, the step time (over the steps that ran) and the decode time are recorded for the
    estimates (`encode_seconds`: the prompt's, None when it came from the cache).
    """
    import torch

    from core.preview import StepPreview

    total = request.effective_steps
    shapes = compile_shapes(request)
    images, seconds = [], []
    for index, seed in enumerate(request.seeds):
        if should_stop is not None and should_stop():
            raise GenerationStopped(0, total)
        label = first_image.compiles(shapes) if first_image is not None else None
        compiling = label is not None
        one = ImageProgress(request, index, report, should_stop, tiles=tiles, compiling=compiling)
        one.previewer = StepPreview(total_steps=total) if preview else None
        if compiling:  # the first step compiles: say so rather than show a stalled step
            first_image.started()
            report("compiling", image_index=index, compiling=True, detail=label)
        image_start = time.perf_counter()
        with torch.inference_mode():
            image, steps_run = make_one(seed, one)
        done = time.perf_counter()
        images.append(image)
        seconds.append(done - image_start)
        if compiling:
            first_image.finished(shapes)
        elif model and device and one.denoised_at and steps_run:
            denoised = one.denoised_at[0]
            SPEEDS.record(
                model=model,
                device=device,
                width=request.width,
                height=request.height,
                step_seconds=(denoised - image_start) / steps_run,  # the steps that ran
                decode_seconds=done - denoised,
                encode_seconds=encode_seconds,
            )
    return images, seconds
