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
    MAX_IMAGE_SIZE,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    MIN_IMAGE_SIZE,
    SIZE_MULTIPLE,
    nearest_valid_sizes,
)
from core.safe_text import quote

# Query parameter names a shared link may carry (generator field names).
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

_INTS = {
    "seed": ("Seed", 0, MAX_SEED),
    "steps": ("Steps", 1, MAX_STEPS),
    "num_images": ("Images", 1, MAX_IMAGES),
    "width": ("Width", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
    "height": ("Height", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
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


def check_values(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return (valid generator values, warnings for the ones dropped); unknown keys are ignored."""
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
    for key, (label, low, high) in _INTS.items():
        if key not in raw:
            continue
        number = _as_int(raw[key])
        if number is None or not low <= number <= high:
            warnings.append(
                f"{label} {quote(raw[key], 40)} is not valid: use a whole number in "
                f"{low}–{high}. Ignored."
            )
        elif key in ("width", "height") and number % SIZE_MULTIPLE:
            nearest = " or ".join(str(s) for s in nearest_valid_sizes(number))
            warnings.append(
                f"{label} {number} is not a multiple of {SIZE_MULTIPLE} "
                f"(valid: {MIN_IMAGE_SIZE}–{MAX_IMAGE_SIZE}; nearest {nearest}). Ignored."
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
    if "seed" in values:
        values["randomize_seed"] = False
    return values, warnings


def from_query(params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Read generator values from URL query parameters (`st.query_params.to_dict()`)."""
    picked = {k: v[-1] if isinstance(v, list) else v for k, v in params.items() if k in QUERY_KEYS}
    return check_values(picked)


def query_string(values: Mapping[str, Any]) -> str:
    """Return the query string that fills the generator with `values` (default fields left out)."""
    params = {}
    for key in QUERY_KEYS:
        if key not in values:
            continue
        value = values[key]
        if key in ("prompt", "negative_prompt") and not value:
            continue
        params[key] = f"{value:g}" if isinstance(value, float) else str(value)
    return urlencode(params)


def share_link(values: Mapping[str, Any], base_url: str) -> str:
    """Return a link to the generator (the app's default page) filled with `values`."""
    return f"{base_url.rstrip('/')}/?{query_string(values)}"


LINK_APPLIED_KEY = "shared_link_applied"


def take_query(state: MutableMapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """Hand a shared link's settings to the generator once; return warnings for bad values.

    Call before `core.form.prepare`. The same link is applied only once per session, so
    the user's edits are not overwritten on every rerun while the URL still carries it.
    """
    picked = {k: params[k] for k in QUERY_KEYS if k in params}
    if not picked:
        return []
    signature = query_string({k: str(v) for k, v in picked.items()})
    if state.get(LINK_APPLIED_KEY) == signature:
        return []
    state[LINK_APPLIED_KEY] = signature
    values, warnings = from_query(picked)
    if values:
        hand_over(state, values)
    return warnings
