"""Options several modes share: skip-layer guidance (every mode) and strength (the modes that
work on an image), with the arithmetic of the steps that really run.

Plain Python (no torch, no Pillow): pages read these declarations before anything loads.
"""

from __future__ import annotations

from typing import Any

from core import slg
from core.modes.base import ModeOption

MIN_STRENGTH = 0.05
MAX_STRENGTH = 1.0


def steps_that_run(steps: int, strength: float) -> int:
    """Denoising steps an image-to-image or inpaint call really runs.

    diffusers' `get_timesteps`: `t_start = int(steps − steps·strength)`, and the steps from
    t_start on run: 40 × 0.6 → 24, but 10 × 0.35 → 4 (not int(3.5) = 3), 40 × 0.05 → 2.
    """
    init = min(steps * strength, steps)
    return steps - int(max(steps - init, 0))


def strength_steps(request: Any) -> int:
    """`Mode.steps_run` of the modes with a strength: the steps diffusers runs."""
    return steps_that_run(int(request.num_inference_steps), request.mode_options["strength"])


def strength_option(default: float) -> ModeOption:
    """ "Strength" (A1111's "Denoising strength"): how much of the source is noised again."""
    return ModeOption(
        name="strength",
        label="Strength",
        kind="float",
        default=default,
        low=MIN_STRENGTH,
        high=MAX_STRENGTH,
        infotext="Denoising strength",
        help="How far from the source the result may go: low keeps its layout and colours, "
        "1 keeps nothing of it. Only this share of the steps runs.",
    )


SLG_OPTION = ModeOption(
    name="slg",
    label="Skip layer guidance",
    kind="text",
    default=slg.OFF,
    infotext=slg.INFOTEXT_KEY,
    parse=slg.parse_option,
    unwritten=(slg.OFF,),
    help=slg.SLG_HELP,
)


def check_slg(request: Any, family: Any) -> tuple[str, str] | None:
    """SLG layers must exist in the family's transformer (diffusers would skip nothing)."""
    guide = slg.from_option(request.mode_options.get("slg"))
    if guide is None or not family.transformer_layers:
        return None
    count = family.transformer_layers
    missing = [str(x) for x in guide.layers if x >= count]
    if not missing:
        return None
    return "slg", (
        f"{family.label}'s transformer has {count} layers (0–{count - 1}): SLG layer(s) "
        f"{', '.join(missing)} do not exist. Its default: {family.slg_text()}."
    )
