"""Generation modes: one declaration per file, this list, and lookups.

Text to image, Vary (image to image), Inpaint and Upscale (hires fix). A new mode is a new
file here with its `Mode`, one line in `MODES`, and a pipeline class name for it in each
family that runs it (`core.models`). The request, records, metadata, share links and
verify read the declaration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.modes.base import (
    MAX_OPTIONS,
    MAX_OPTIONS_CHARS,
    Mode,
    ModeOption,
    options_json,
    parse_options_json,
)
from core.modes.img2img import IMG2IMG
from core.modes.inpaint import INPAINT
from core.modes.txt2img import TXT2IMG
from core.modes.upscale import UPSCALE
from core.safe_text import quote

MODES: list[Mode] = [TXT2IMG, IMG2IMG, INPAINT, UPSCALE]
DEFAULT_MODE = TXT2IMG

__all__ = [
    "DEFAULT_MODE",
    "IMG2IMG",
    "INPAINT",
    "MAX_OPTIONS",
    "MAX_OPTIONS_CHARS",
    "MODES",
    "TXT2IMG",
    "UPSCALE",
    "Mode",
    "ModeOption",
    "UnknownMode",
    "get_mode",
    "mode_ids",
    "option_names",
    "options_from_form",
    "options_json",
    "parse_options_json",
]


class UnknownMode(ValueError):  # noqa: N818 - reads as "raise UnknownMode"
    """No mode has this id; the message names the known ones."""


def mode_ids() -> tuple[str, ...]:
    return tuple(m.id for m in MODES)


def get_mode(mode_id: Any) -> Mode:
    """The mode with this id; `UnknownMode` naming the known ids when there is none."""
    for mode in MODES:
        if mode.id == mode_id:
            return mode
    raise UnknownMode(
        f"Mode {quote(mode_id, 40)} is not known; use one of: {', '.join(mode_ids())}."
    )


def option_names() -> tuple[str, ...]:
    """Every mode's option names (the form's and the share link's extra fields)."""
    return tuple(dict.fromkeys(o.name for m in MODES for o in m.options))


def options_from_form(values: Mapping[str, Any], mode_id: Any) -> dict[str, Any]:
    """The options of `mode_id` found among form values ({} for an unknown mode)."""
    try:
        mode = get_mode(mode_id)
    except UnknownMode:
        return {}
    return {o.name: values[o.name] for o in mode.options if o.name in values}
