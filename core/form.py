"""The generator form's state: field names, defaults, presets, and hand-over between pages.

Defaults are the model family's (`core.models`: size, steps, guidance); the mode's
options (`core.modes`) are form fields too, under their option names.

Streamlit forgets a widget's value when its page is not shown, so the values live under
`generator_settings` too, and other pages (the gallery's "Use these settings", a shared
link) hand values over through `generator_apply`, which the generator page applies
before it draws its widgets. Works on any mutable mapping, `st.session_state` included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from typing import Any

from core.generation import AppliedStyle, GenerationRequest, LoraChoice
from core.models import DEFAULT_FAMILY, Family
from core.modes import DEFAULT_MODE, MODES, get_mode, options_from_form
from core.sources import ImageInput


def defaults(family: Family = DEFAULT_FAMILY) -> dict[str, Any]:
    """The form's fields and their defaults for `family`, every mode's options included."""
    values: dict[str, Any] = {
        "prompt": "",
        "negative_prompt": "",
        "seed": 42,
        "randomize_seed": True,
        "width": family.width,
        "height": family.height,
        "guidance_scale": family.guidance,
        "steps": family.steps,
        "num_images": 1,
        "mode": DEFAULT_MODE.id,
        # LoRAs picked, as (name, weight) pairs, and the names of the styles chosen.
        "loras": (),
        "styles": (),
    }
    for mode in MODES:  # an option two modes share keeps the first one's default
        for name, value in mode.defaults().items():
            values.setdefault(name, value)
    values.update(family.option_defaults())  # e.g. SLG on for SD3.5 Medium
    return values


def switch_mode(state: MutableMapping[str, Any], mode_id: str, family: Family) -> None:
    """Make `mode_id` the form's mode, with that mode's own option defaults (Vary's
    strength is 0.6, Upscale's 0.35); the options the family decides (SLG) stay as set."""
    mode = get_mode(mode_id)
    kept = family.option_defaults()
    state["mode"] = mode.id
    for name, value in mode.defaults().items():
        if name not in kept:
            state[name] = value


# SD3.5 Medium's (the default family); the generator page uses `defaults(its family)`.
DEFAULTS: dict[str, Any] = defaults()


def field_names() -> set[str]:
    """Every form field, mode options included (read when called: modes may be added)."""
    return set(defaults())


SAVED_KEY = "generator_settings"
APPLY_KEY = "generator_apply"
# The chosen styles' templates by name, {name: (prompt, negative prompt)}: the ui puts the
# visitor's styles here as it draws the picker; `build_request` applies the chosen ones.
STYLE_TEMPLATES = "style_templates"

EXAMPLE_PROMPTS = (
    "A capybara wearing a suit holding a sign that reads Hello World",
    "A lighthouse on a cliff at dusk, volumetric fog, oil painting",
    "Macro photo of a dew-covered spider web at sunrise, shallow depth of field",
)

# Aspect ratio → (width, height), about one megapixel, snapped to valid sizes.
ASPECT_RATIOS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16")
_TARGET_AREA = 1024 * 1024  # SD3.5's native size, kept by the presets for every family


def aspect_size(ratio: str, family: Family = DEFAULT_FAMILY) -> tuple[int, int]:
    """Return the valid (width, height) closest to one megapixel at `ratio` ("16:9")."""
    w, h = (int(part) for part in ratio.split(":"))
    width = math.sqrt(_TARGET_AREA * w / h)
    return family.sizes.snap(width), family.sizes.snap(_TARGET_AREA / width)


def hand_over(state: MutableMapping[str, Any], values: Mapping[str, Any]) -> None:
    """Queue `values` for the generator page; unknown keys are ignored."""
    fields = field_names()
    state[APPLY_KEY] = {k: v for k, v in values.items() if k in fields}


def prepare(state: MutableMapping[str, Any], family: Family = DEFAULT_FAMILY) -> None:
    """Give every field a value before the widgets are drawn (call first on the page).

    A field without a value gets `family`'s default (the generator page passes its own).
    """
    fields = defaults(family)
    saved = state.setdefault(SAVED_KEY, dict(fields))
    pending = state.pop(APPLY_KEY, None)
    if pending:
        saved.update(pending)
        if "seed" in pending:  # a handed-over seed is meant to be used as is
            saved["randomize_seed"] = pending.get("randomize_seed", False)
    for key, default in fields.items():
        if pending and key in saved or key not in state:
            state[key] = saved.get(key, default)


def remember(state: MutableMapping[str, Any]) -> None:
    """Copy the widgets' values into the store that survives page changes (a field whose
    widget was not drawn this run, e.g. a mode's option, keeps its saved value)."""
    saved = dict(state.get(SAVED_KEY) or {})
    saved.update({key: state[key] for key in field_names() if key in state})
    state[SAVED_KEY] = saved


def build_request(
    state: Mapping[str, Any],
    *,
    seed: int,
    family: str = DEFAULT_FAMILY.id,
    source: ImageInput | None = None,
    mask: ImageInput | None = None,
) -> GenerationRequest:
    """Build the (validated) request from the form for the model family `family` (an id);
    raise `InvalidRequest` with the fix.

    A mode that works on an image takes `source` (and Inpaint `mask`); its output size is
    the source's (Upscale: enlarged), not the form's width and height. The chosen styles
    (`styles`, their templates under STYLE_TEMPLATES) are merged into the prompts as A1111
    does and kept on the request for its record; the picked LoRAs (`loras`, (name, weight)
    pairs) go with it.
    """
    mode = state.get("mode", DEFAULT_MODE.id)
    own_size = not get_mode(mode).needs_source if mode in {m.id for m in MODES} else True
    prompt, negative, applied = apply_chosen_styles(state)
    loras = tuple(LoraChoice(str(name), _weight(weight)) for name, weight in state.get("loras", ()))
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        seed=seed,
        width=int(state["width"]) if own_size else None,  # type: ignore[arg-type]
        height=int(state["height"]) if own_size else None,  # type: ignore[arg-type]
        guidance_scale=float(state["guidance_scale"]),
        num_inference_steps=int(state["steps"]),
        num_images=int(state["num_images"]),
        family=family,
        mode=mode,
        mode_options=options_from_form(state, mode),
        loras=loras,
        styles=applied,
        source=source if not own_size else None,
        mask=mask if not own_size and "mask" in get_mode(mode).inputs else None,
    )


def _weight(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan  # the request names the LoRA and says the weight must be a number


def apply_chosen_styles(state: Mapping[str, Any]) -> tuple[str, str, tuple[AppliedStyle, ...]]:
    """The form's prompts with its chosen styles merged in (A1111's rule, in the order
    chosen), and the styles as applied; a chosen name without a template is skipped."""
    from core.styles import apply_styles  # the styles' rule; light (no torch)

    templates = state.get(STYLE_TEMPLATES) or {}
    applied = tuple(
        AppliedStyle(name, *templates[name])
        for name in state.get("styles", ())
        if name in templates
    )
    prompt, negative = apply_styles(state["prompt"], state["negative_prompt"], applied)
    return prompt, negative, applied
