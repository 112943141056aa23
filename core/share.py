"""Settings that arrive from outside the form: shared links and imported PNGs.

Everything here is checked against the generator's ranges before it is handed over:
a widget given a value outside its range would stop the page, so a bad value is dropped
with a warning that names the valid range, and the rest still applies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import urlencode

from core.form import hand_over
from core.generation import (
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_LORAS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    lora_name_problem,
    lora_weight_problem,
)
from core.models import DEFAULT_FAMILY, Family
from core.modes import DEFAULT_MODE, Mode, UnknownMode, get_mode, option_names
from core.safe_text import quote
from core.sources import valid_record_id

# Query parameter names a shared link may carry (generator field names); a link may also
# carry `mode`, that mode's option names and `source` (see `_link_keys`).
QUERY_KEYS = (
    "prompt",
    "negative_prompt",
    "seed",
    "width",
    "height",
    "guidance_scale",
    "steps",
    "num_images",
)
MODE_KEY = "mode"
# LoRAs in a link: `loras=film:0.8,grain:1` (names hold no `:` or `,`, see core.lora).
LORAS_KEY = "loras"
# The seed-history record a Vary / Inpaint / Upscale link works on: an id, never bytes. The
# generator opens it only for a visitor allowed to see that record (core.history.inputs).
SOURCE_KEY = "source"

_INTS = {
    "seed": ("Seed", 0, MAX_SEED),
    "steps": ("Steps", 1, MAX_STEPS),
    "num_images": ("Images", 1, MAX_IMAGES),
}


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _check_mode(raw: Mapping[str, Any], values: dict[str, Any], warnings: list[str]) -> Mode | None:
    """Check `mode` and that mode's options in `raw` into `values`; return the mode, or
    None when the named mode is unknown (its options are then ignored too)."""
    mode = DEFAULT_MODE
    if MODE_KEY in raw:
        try:
            mode = get_mode(raw[MODE_KEY])
        except UnknownMode as exc:
            warnings.append(f"{exc} Ignored, with its options.")
            return None
        values[MODE_KEY] = mode.id
    for option in mode.options:
        if option.name in raw:
            value, problem = option.check(raw[option.name])
            if problem is None:
                values[option.name] = value
            else:
                warnings.append(
                    f"{option.label} {quote(raw[option.name], 40)} is not valid: use "
                    f"{option.describe()}. Ignored."
                )
    return mode


def check_values(
    raw: Mapping[str, Any], *, family: Family = DEFAULT_FAMILY
) -> tuple[dict[str, Any], list[str]]:
    """Return (valid generator values, warnings for the ones dropped); unknown keys are ignored.

    Sizes are checked against `family`'s rules (the generator's model family); a `mode`
    must be a known one, and its options in range.
    """
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for key in ("prompt", "negative_prompt"):
        if key in raw:
            text = raw[key] if isinstance(raw[key], str) else str(raw[key])
            if len(text) > MAX_PROMPT_CHARS:
                warnings.append(
                    f"{key.replace('_', ' ').capitalize()} is {len(text):,} characters; "
                    f"the limit is {MAX_PROMPT_CHARS:,}. Ignored."
                )
            else:
                values[key] = text
    rules = family.sizes
    ints = {**_INTS, "width": ("Width", rules.min, rules.max)}
    ints["height"] = ("Height", rules.min, rules.max)
    for key, (label, low, high) in ints.items():
        if key not in raw:
            continue
        number = _as_int(raw[key])
        if number is None or not low <= number <= high:
            warnings.append(
                f"{label} {quote(raw[key], 40)} is not valid: use a whole number in "
                f"{low}–{high}. Ignored."
            )
        elif key in ("width", "height") and number % rules.multiple:
            nearest = " or ".join(str(s) for s in rules.nearest(number))
            warnings.append(
                f"{label} {number} is not a multiple of {rules.multiple} "
                f"(valid for {family.label}: {rules.min}–{rules.max}; nearest {nearest}). "
                "Ignored."
            )
        else:
            values[key] = number
    if "guidance_scale" in raw:
        try:
            guidance = float(str(raw["guidance_scale"]).strip())
        except ValueError:
            guidance = math.nan
        if not math.isfinite(guidance) or not 0 <= guidance <= MAX_GUIDANCE:
            warnings.append(
                f"Guidance scale {quote(raw['guidance_scale'], 40)} is not valid: use a number "
                f"in 0–{MAX_GUIDANCE:g}. Ignored."
            )
        else:
            values["guidance_scale"] = guidance
    _check_mode(raw, values, warnings)
    if LORAS_KEY in raw:
        values[LORAS_KEY] = _check_loras(raw[LORAS_KEY], warnings)
    mode = _check_mode(raw, values, warnings)
    if SOURCE_KEY in raw and mode is not None and mode.needs_source:
        source = raw[SOURCE_KEY]
        if valid_record_id(source):
            values[SOURCE_KEY] = source
        else:
            warnings.append(f"Source {quote(source, 40)} is not a record id. Ignored.")
    if "seed" in values:
        values["randomize_seed"] = False
    return values, warnings


def _check_loras(raw: Any, warnings: list[str]) -> list[tuple[str, float]]:
    """LoRA choices from a link (`name:weight,…`) or handed over as (name, weight) pairs;
    invalid ones are dropped with a warning. Whether the files are here is the generator's
    to say (it lists the LoRA folder)."""
    if isinstance(raw, str):
        items = [item.partition(":")[::2] for item in raw[:2000].split(",") if item.strip()]
    elif isinstance(raw, list | tuple):
        items = [item for item in raw if isinstance(item, list | tuple) and len(item) == 2]
    else:
        items = []
    loras: list[tuple[str, float]] = []
    for name, weight in items[: MAX_LORAS * 2]:
        name = str(name).strip()
        try:
            number = float(str(weight).strip() or "1")
        except ValueError:
            number = math.nan
        problem = lora_name_problem(name) or lora_weight_problem(number)
        if problem is None and any(name == n for n, _ in loras):
            problem = "it is named twice"
        if problem is None and len(loras) >= MAX_LORAS:
            problem = f"at most {MAX_LORAS} LoRAs go with one image"
        if problem:
            warnings.append(f"LoRA {quote(name, 40)}: {problem}. Ignored.")
        else:
            loras.append((name, number))
    return loras


def _link_keys() -> tuple[str, ...]:
    """The parameter names a link may carry: the fields, `mode`, and the modes' options."""
    return (*QUERY_KEYS, MODE_KEY, LORAS_KEY, *option_names(), SOURCE_KEY)


def _last(value: Any) -> Any:
    return value[-1] if isinstance(value, list) else value


def from_query(
    params: Mapping[str, Any], *, family: Family = DEFAULT_FAMILY
) -> tuple[dict[str, Any], list[str]]:
    """Read generator values from URL query parameters (`st.query_params.to_dict()`)."""
    keys = _link_keys()
    picked = {k: _last(v) for k, v in params.items() if k in keys}
    return check_values(picked, family=family)


def query_string(values: Mapping[str, Any]) -> str:
    """Return the query string that fills the generator with `values` (default fields left out).

    A mode other than text-to-image is written as `mode=` with its options after it.
    """
    params = {}
    for key in QUERY_KEYS:
        if key not in values:
            continue
        value = values[key]
        if key in ("prompt", "negative_prompt") and not value:
            continue
        params[key] = f"{value:g}" if isinstance(value, float) else str(value)
    mode_id = values.get(MODE_KEY, DEFAULT_MODE.id)
    try:
        mode = get_mode(mode_id)
    except UnknownMode:
        return urlencode(params)
    if mode.id != DEFAULT_MODE.id:
        params[MODE_KEY] = mode.id
    # The mode's options, left out where they are the mode's own defaults (text to image
    # with SLG off is the plain link it always was).
    params.update(
        {
            o.name: o.text(values[o.name])
            for o in mode.options
            if o.name in values and (mode.id != DEFAULT_MODE.id or values[o.name] != o.default)
        }
    )
    if mode.needs_source and values.get(SOURCE_KEY):
        params[SOURCE_KEY] = str(values[SOURCE_KEY])  # a record's id: never image bytes
    loras = values.get(LORAS_KEY) or ()
    if loras:
        params[LORAS_KEY] = ",".join(f"{name}:{float(weight):g}" for name, weight in loras)
    return urlencode(params)


def share_link(values: Mapping[str, Any], base_url: str) -> str:
    """Return a link to the generator (the app's default page) filled with `values`."""
    return f"{base_url.rstrip('/')}/?{query_string(values)}"


LINK_APPLIED_KEY = "shared_link_applied"
LINK_SOURCE_KEY = "shared_link_source"  # the record id a link asks to work on, for the page


def take_query(
    state: MutableMapping[str, Any],
    params: Mapping[str, Any],
    *,
    family: Family = DEFAULT_FAMILY,
) -> list[str]:
    """Hand a shared link's settings to the generator once; return warnings for bad values.

    Call before `core.form.prepare`. The same link is applied only once per session, so
    the user's edits are not overwritten on every rerun while the URL still carries it.
    Sizes are checked against `family`'s rules (the generator's model family).
    """
    picked = {k: params[k] for k in _link_keys() if k in params}
    if not picked:
        return []
    signature = urlencode(sorted((k, str(_last(v))) for k, v in picked.items()))
    if state.get(LINK_APPLIED_KEY) == signature:
        return []
    state[LINK_APPLIED_KEY] = signature
    values, warnings = from_query(picked, family=family)
    source = values.pop(SOURCE_KEY, None)
    if source is not None:  # opened (or not) by the page, which knows who is looking
        state[LINK_SOURCE_KEY] = source
    if values:
        hand_over(state, values)
    return warnings
