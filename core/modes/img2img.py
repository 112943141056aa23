"""Vary (image to image): the source is noised to `strength` and denoised with the prompt.

`StableDiffusion3Img2ImgPipeline` built on the loaded modules (`core.image_modes`); only the
last `strength` share of the steps runs (40 × 0.6 = 24). The output has the source's size.
"""

from typing import Any

from core.modes.base import Mode
from core.modes.shared import SLG_OPTION, check_slg, strength_option, strength_steps

DEFAULT_STRENGTH = 0.6  # diffusers' default for image to image


def _source_size(size: Any, _options: Any, _family: Any) -> tuple[int, int]:
    return int(size[0]), int(size[1])


IMG2IMG = Mode(
    id="img2img",
    label="Vary",
    remote_task="image_to_image",  # huggingface_hub InferenceClient.image_to_image
    options=(strength_option(DEFAULT_STRENGTH), SLG_OPTION),
    steps_run=strength_steps,
    inputs=("source",),
    output_size=_source_size,
    check=check_slg,
    summary="A variation of the source: the prompt redraws it, as far as Strength lets it.",
)
