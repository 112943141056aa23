"""PNG metadata: the A1111 `parameters` text chunk, our JSON chunk, and a parser for both.

A1111 (`modules/processing.py` `create_infotext`) writes
``<prompt>\\nNegative prompt: <neg>\\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, ...``;
a value holding `,` `:` or a newline is JSON-quoted. Fooocus, SD.Next and Forge write the
same form (Fooocus may write JSON instead). Our PNGs carry that chunk, so other tools read
the settings, plus `sd35-dashboard`, a JSON copy of the full history record.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PARAMETERS_KEY = "parameters"
RECORD_KEY = "sd35-dashboard"
MAX_IMPORT_BYTES = 20 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A1111 `infotext_utils.re_param_code`: `Key: value,` where value may be a JSON string.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_SIZE = re.compile(r"^\s*\(?\s*(\d+)\s*[x×,]\s*(\d+)\s*\)?\s*$")
_NEGATIVE = "Negative prompt:"


class MetadataError(ValueError):
    """An uploaded file holds no settings we can read; the message says why."""


@dataclass(frozen=True)
class ParsedParameters:
    """Generator form values read from an infotext, and the keys we do not use."""

    values: dict[str, Any]
    extras: dict[str, str] = field(default_factory=dict)


def _quote(value: Any) -> str:
    """Quote like A1111: JSON only when the value holds `,` `:` or a newline."""
    text = str(value)
    if "," not in text and ":" not in text and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _number(value: float) -> str:
    return f"{value:g}"


def build_infotext(
    *,
    prompt: str,
    negative_prompt: str,
    steps: int,
    sampler: str,
    guidance_scale: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Return A1111's `parameters` text for these settings (extra keys go last)."""
    params: dict[str, Any] = {
        "Steps": steps,
        "Sampler": sampler,
        "CFG scale": _number(guidance_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model": model,
    }
    params.update({k: v for k, v in (extra or {}).items() if v not in (None, "")})
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in params.items())
    negative = f"\n{_NEGATIVE} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return str(json.loads(value))
        except json.JSONDecodeError:
            return value
    return value


def split_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Split A1111 infotext into (prompt, negative prompt, {key: value}) as A1111 does."""
    *lines, last = text.strip().replace("\r\n", "\n").split("\n")
    if len(_RE_PARAM.findall(last)) < 3:  # A1111's rule: fewer than 3 keys → still prompt
        lines.append(last)
        last = ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        if line.strip().startswith(_NEGATIVE):
            in_negative = True
            line = line.strip()[len(_NEGATIVE) :]
        (negative_lines if in_negative else prompt_lines).append(line.strip())
    params = {key.strip(): _unquote(value) for key, value in _RE_PARAM.findall(last)}
    return "\n".join(prompt_lines).strip(), "\n".join(negative_lines).strip(), params


def _to_int(value: Any) -> int | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _to_float(value: Any) -> float | None:
    try:
        return float(str(value).strip())
    except ValueError:
        return None


# Parameter keys (lower case, spaces as `_`) → generator field and converter.
_FIELDS = {
    "steps": ("steps", _to_int),
    "cfg_scale": ("guidance_scale", _to_float),
    "guidance_scale": ("guidance_scale", _to_float),
    "seed": ("seed", _to_int),
}


def _form_values(params: Mapping[str, Any]) -> ParsedParameters:
    """Map infotext keys onto the generator's fields; keep the rest as extras."""
    values: dict[str, Any] = {}
    extras: dict[str, str] = {}
    for key, raw in params.items():
        name = key.strip().lower().replace(" ", "_")
        if name in _FIELDS:
            target, convert = _FIELDS[name]
            converted = convert(raw)
            if converted is None:
                extras[key] = str(raw)
            else:
                values[target] = converted
        elif name in ("size", "resolution"):
            match = _RE_SIZE.match(str(raw))
            if match:
                values["width"], values["height"] = int(match[1]), int(match[2])
            else:
                extras[key] = str(raw)
        elif name in ("width", "height") and _to_int(raw) is not None:
            values[name] = _to_int(raw)
        else:
            extras[key] = str(raw)
    if "seed" in values:
        values["randomize_seed"] = False
    return ParsedParameters(values=values, extras=extras)


def parse_parameters(text: str) -> ParsedParameters:
    """Read generator settings from a `parameters` chunk (A1111 text or Fooocus JSON).

    Values are returned as written; `core.share.check_values` says which are in range.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):  # Fooocus "fooocus" scheme: a JSON object
            lowered = {str(k).lower().replace(" ", "_"): v for k, v in data.items()}
            params = {k: v for k, v in lowered.items() if k not in ("prompt", "negative_prompt")}
            parsed = _form_values(params)
            for key in ("prompt", "negative_prompt"):
                if isinstance(lowered.get(key), str):
                    parsed.values[key] = lowered[key]
            return parsed
    prompt, negative, params = split_infotext(stripped)
    parsed = _form_values(params)
    parsed.values["prompt"] = prompt
    parsed.values["negative_prompt"] = negative
    return parsed


def png_info(record_json: str, infotext: str) -> Any:
    """Return a Pillow `PngInfo` holding the `parameters` and record chunks."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PARAMETERS_KEY, infotext)  # Pillow switches to iTXt for non-Latin-1 text
    info.add_text(RECORD_KEY, record_json)
    return info


def read_png_text(data: bytes) -> dict[str, str]:
    """Return the text chunks of PNG bytes; raise `MetadataError` for a non-PNG or huge file."""
    if len(data) > MAX_IMPORT_BYTES:
        raise MetadataError(
            f"The file is {len(data) / 1e6:.1f} MB; the limit is {MAX_IMPORT_BYTES // 2**20} MB."
        )
    if not data.startswith(PNG_SIGNATURE):
        raise MetadataError(
            "This is not a PNG file. Settings travel in PNG text chunks; upload the PNG "
            "the generator saved (JPEG and WebP copies lose them)."
        )
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return dict(getattr(image, "text", {}) or {})
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MetadataError(f"The PNG could not be read: {exc}.") from exc


def parameters_from_png(data: bytes) -> ParsedParameters:
    """Read the settings of an uploaded PNG; raise `MetadataError` saying what is missing."""
    chunks = read_png_text(data)
    text = chunks.get(PARAMETERS_KEY)
    if not text or not text.strip():
        raise MetadataError(
            "This PNG carries no generation settings (no `parameters` text chunk). Images "
            "from this app, A1111, Forge, Fooocus or SD.Next have one, unless a re-save "
            "stripped it."
        )
    return parse_parameters(text)
