"""Inpaint: repaint the masked area of the source; every pixel outside the blurred mask is
the source's, bit for bit (A1111's paste-back, `core.masks`).

`StableDiffusion3InpaintPipeline` on the loaded modules (`core.image_modes`). Local only:
the Hugging Face inference tasks have no inpainting.
"""

from core.modes.base import Mode, ModeOption
from core.modes.img2img import _source_size
from core.modes.shared import SLG_OPTION, check_slg, strength_option, strength_steps

DEFAULT_STRENGTH = 0.75  # A1111's default denoising strength for inpainting
DEFAULT_MASK_BLUR = 4  # A1111's default "Mask blur" (core.masks blurs as A1111 does)
MAX_MASK_BLUR = 64  # A1111's slider maximum

MASK_BLUR = ModeOption(
    name="mask_blur",
    label="Mask blur",
    kind="int",
    default=DEFAULT_MASK_BLUR,
    low=0,
    high=MAX_MASK_BLUR,
    infotext="Mask blur",
    unwritten=(0,),  # A1111 writes it only when it blurs
    help="Pixels of soft edge around the painted area, where the repainted and the kept "
    "images blend (A1111's Mask blur).",
)

INPAINT = Mode(
    id="inpaint",
    label="Inpaint",
    remote_task="",  # no inference task repaints a masked area: local only
    options=(strength_option(DEFAULT_STRENGTH), MASK_BLUR, SLG_OPTION),
    steps_run=strength_steps,
    inputs=("source", "mask"),
    output_size=_source_size,
    check=check_slg,
    summary="Repaint the painted area; everything outside it stays exactly as it is.",
)
