"""Upscale (A1111's hires fix): the source enlarged with Lanczos by ×1.25 or ×1.4 (within
the family's largest size), then image to image at a low strength with the same prompt and
seed (`core.upscale`). Recorded with A1111's `Hires upscale`.

The size arithmetic lives here, in plain Python: pages show the target size before
anything loads, and the request checks it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from core.modes.base import Mode, ModeOption
from core.modes.shared import SLG_OPTION, check_slg, strength_option, strength_steps

HIRES_FACTORS = (1.25, 1.4)
DEFAULT_HIRES_STRENGTH = 0.35
INFOTEXT_KEY = "Hires upscale"  # A1111's key; the value is the factor, e.g. 1.4


class UpscaleError(ValueError):
    """The image cannot be upscaled (already at the limit, unknown factor); says why."""


def upscale_size(
    width: int,
    height: int,
    factor: float,
    *,
    max_side: int,
    multiple: int,
    max_pixels: int | None = None,
) -> tuple[int, int]:
    """`width`×`height` × `factor`, capped at `max_side` (and `max_pixels`) keeping the
    shape, each side snapped to the nearest multiple of `multiple` within the caps:
    1024×768 at ×1.4 → 1440×1072; 1024² at ×1.25 → 1280²; 1440² → `UpscaleError`."""
    if factor not in HIRES_FACTORS:
        raise UpscaleError(f"Upscale by {' or '.join(map(str, HIRES_FACTORS))}; got {factor!r}.")
    scale = min(factor, max_side / max(width, height))
    if max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (width * height)))

    def snap(value: int) -> int:
        snapped = int(round(value * scale / multiple)) * multiple
        while snapped > max_side:
            snapped -= multiple
        return max(snapped, multiple)

    target_w, target_h = snap(width), snap(height)
    while max_pixels and target_w * target_h > max_pixels:  # rounding up went past the area
        if target_w >= target_h:
            target_w -= multiple
        else:
            target_h -= multiple
    target = target_w, target_h
    if target[0] <= width and target[1] <= height:
        raise UpscaleError(
            f"{width}×{height} is already at this model's largest size ({max_side} px a side"
            + (f", {max_pixels / 1e6:.1f} MP" if max_pixels else "")
            + "): there is nothing to upscale to."
        )
    return target


def target_size(size: Any, options: Mapping[str, Any], family: Any) -> tuple[int, int]:
    """`Mode.output_size`: the source's size × the factor, within `family`'s sizes."""
    rules = family.sizes
    return upscale_size(
        int(size[0]),
        int(size[1]),
        float(options["factor"]),
        max_side=rules.max,
        multiple=rules.multiple,
    )


FACTOR = ModeOption(
    name="factor",
    label="Upscale by",
    kind="choice",
    default="1.25",
    choices=tuple(f"{f:g}" for f in HIRES_FACTORS),
    infotext=INFOTEXT_KEY,
    help="Lanczos to this size (within the model's largest), then a low-strength Vary with "
    "the same prompt and seed adds the detail.",
)

UPSCALE = Mode(
    id="upscale",
    label="Upscale",
    remote_task="image_to_image",  # the Lanczos resize is local; the refinement is a Vary
    options=(strength_option(DEFAULT_HIRES_STRENGTH), FACTOR, SLG_OPTION),
    steps_run=strength_steps,
    inputs=("source",),
    output_size=target_size,
    check=check_slg,
    summary="The source enlarged (Lanczos), then redrawn at a low strength to add detail.",
)
