"""The generator form's state: field names, defaults, presets, and hand-over between pages.

Streamlit forgets a widget's value when its page is not shown, so the values live under
`generator_settings` too, and other pages (the gallery's "Use these settings", a shared
link) hand values over through `generator_apply`, which the generator page applies
before it draws its widgets. Works on any mutable mapping, `st.session_state` included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from typing import Any

from core.generation import (
    DEFAULT_GUIDANCE,
    DEFAULT_HEIGHT,
    DEFAULT_STEPS,
    DEFAULT_WIDTH,
    GenerationRequest,
    snap_size,
)

DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "seed": 42,
    "randomize_seed": True,
    "width": DEFAULT_WIDTH,
    "height": DEFAULT_HEIGHT,
    "guidance_scale": DEFAULT_GUIDANCE,
    "steps": DEFAULT_STEPS,
    "num_images": 1,
}

SAVED_KEY = "generator_settings"
APPLY_KEY = "generator_apply"

EXAMPLE_PROMPTS = (
    "A capybara wearing a suit holding a sign that reads Hello World",
    "A lighthouse on a cliff at dusk, volumetric fog, oil painting",
    "Macro photo of a dew-covered spider web at sunrise, shallow depth of field",
)

# Aspect ratio → (width, height), about one megapixel, snapped to valid sizes.
ASPECT_RATIOS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16")
_TARGET_AREA = DEFAULT_WIDTH * DEFAULT_HEIGHT


def aspect_size(ratio: str) -> tuple[int, int]:
    """Return the valid (width, height) closest to one megapixel at `ratio` ("16:9")."""
    w, h = (int(part) for part in ratio.split(":"))
    width = math.sqrt(_TARGET_AREA * w / h)
    return snap_size(width), snap_size(_TARGET_AREA / width)


def hand_over(state: MutableMapping[str, Any], values: Mapping[str, Any]) -> None:
    """Queue `values` for the generator page; unknown keys are ignored."""
    state[APPLY_KEY] = {k: v for k, v in values.items() if k in DEFAULTS}


def prepare(state: MutableMapping[str, Any]) -> None:
    """Give every field a value before the widgets are drawn (call first on the page)."""
    saved = state.setdefault(SAVED_KEY, dict(DEFAULTS))
    pending = state.pop(APPLY_KEY, None)
    if pending:
        saved.update(pending)
        if "seed" in pending:  # a handed-over seed is meant to be used as is
            saved["randomize_seed"] = pending.get("randomize_seed", False)
    for key, default in DEFAULTS.items():
        if pending and key in saved or key not in state:
            state[key] = saved.get(key, default)


def remember(state: MutableMapping[str, Any]) -> None:
    """Copy the widgets' values into the store that survives page changes."""
    state[SAVED_KEY] = {key: state[key] for key in DEFAULTS if key in state}


def build_request(state: Mapping[str, Any], *, seed: int) -> GenerationRequest:
    """Build the (validated) request from the form; raise `InvalidRequest` with the fix."""
    return GenerationRequest(
        prompt=state["prompt"],
        negative_prompt=state["negative_prompt"],
        seed=seed,
        width=int(state["width"]),
        height=int(state["height"]),
        guidance_scale=float(state["guidance_scale"]),
        num_inference_steps=int(state["steps"]),
        num_images=int(state["num_images"]),
    )
