"""Upscale ("hires fix") of a finished image: Lanczos to ×1.25 or ×1.4 within the family's
limits, then image-to-image at a low strength with the same prompt and seed.

As A1111's hires fix does for a result (`modules/processing.py`, `StableDiffusionProcessingTxt2Img`:
`hr_upscale_to_x = int(width * hr_scale)`, resize, then img2img at `denoising_strength`; its
infotext says `Hires upscale: 1.4`), with two differences: the target is snapped to the
model's multiple (16 for SD3, to the nearest, never past the limits), and the resize is a plain
Lanczos (no upscaler model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.image_modes import ModeImage, run_image_mode
from core.modes.upscale import (  # the size arithmetic is the mode's (light, for the pages)
    DEFAULT_HIRES_STRENGTH,
    HIRES_FACTORS,
    INFOTEXT_KEY,
    UpscaleError,
    upscale_size,
)
from core.slg import SkipLayerGuidance

__all__ = [
    "DEFAULT_HIRES_STRENGTH",
    "HIRES_FACTORS",
    "INFOTEXT_KEY",
    "UpscaleError",
    "Upscaled",
    "lanczos",
    "run_upscale",
    "upscale_size",
]


def lanczos(image: Any, size: tuple[int, int]) -> Any:
    from PIL import Image

    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class Upscaled:
    result: ModeImage  # `.image` is the upscaled, refined image
    resized: Any  # the Lanczos resize that went into image-to-image
    factor: float
    note: str  # "Upscaled 1024×768 → 1280×960 (×1.25 asked; Lanczos, then strength 0.35)"


def run_upscale(
    pipe: Any,
    *,
    image: Any,
    factor: float,
    embeds: dict[str, Any],
    seed: int,
    steps: int,
    guidance_scale: float,
    max_side: int,
    multiple: int,
    max_pixels: int | None = None,
    strength: float = DEFAULT_HIRES_STRENGTH,
    slg: SkipLayerGuidance | None = None,
    on_step: Callable[[int, int], None] | None = None,
    class_name: str | None = None,
    on_latents: Callable[[Any, int, Any], None] | None = None,
) -> Upscaled:
    """Upscale `image` (a result: its prompt's `embeds` and its `seed`) by `factor`."""
    size = upscale_size(
        *image.size, factor, max_side=max_side, multiple=multiple, max_pixels=max_pixels
    )
    resized = lanczos(image, size)
    result = run_image_mode(
        pipe,
        mode="img2img",
        embeds=embeds,
        image=resized,
        seed=seed,
        steps=steps,
        guidance_scale=guidance_scale,
        strength=strength,
        slg=slg,
        on_step=on_step,
        class_name=class_name,
        on_latents=on_latents,
    )
    w, h = image.size
    note = (
        f"Upscaled {w}×{h} → {size[0]}×{size[1]} (×{factor:g} asked; Lanczos, then "
        f"image-to-image at strength {strength:g}, {result.steps_run} steps)."
    )
    return Upscaled(result=result, resized=resized, factor=factor, note=note)
