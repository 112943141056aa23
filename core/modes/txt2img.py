"""Text to image: the prompt alone, `StableDiffusion3Pipeline`'s own call, with skip-layer
guidance as diffusers runs it natively (`skip_guidance_layers` and friends)."""

from typing import Any

from core import slg
from core.modes.base import Mode
from core.modes.shared import SLG_OPTION, check_slg


def _slg_kwargs(request: Any) -> dict[str, Any]:
    """diffusers' own SLG arguments when SLG is on and guidance too (it runs only with CFG)."""
    guide = slg.from_option(request.mode_options.get("slg"))
    if not slg.slg_runs(guide, request.guidance_scale):
        return {}
    return guide.pipeline_kwargs()  # type: ignore[union-attr]


TXT2IMG = Mode(
    id="txt2img",
    label="Text to image",
    remote_task="text_to_image",  # huggingface_hub InferenceClient.text_to_image
    options=(SLG_OPTION,),
    extra_kwargs=_slg_kwargs,
    check=check_slg,
    summary="An image from the prompt alone.",
)
