"""PNG metadata: the A1111 `parameters` text chunk, our JSON chunk, and a parser for both.

A1111 (`modules/processing.py` `create_infotext`) writes
``<prompt>\\nNegative prompt: <neg>\\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, ...``;
a value holding `,` `:` or a newline is JSON-quoted. Fooocus, SD.Next and Forge write the
same form (Fooocus may write JSON instead). Our PNGs carry that chunk, so other tools read
the settings, plus `sd35-dashboard`, a JSON copy of the full history record (with its
model family, generation mode and the mode's options). A mode's options are written
under their A1111 names (`core.modes`), and an import tells the mode from them, or from
our JSON chunk when the PNG is ours.

Uploads are hostile: the PNG's chunks are walked here without decoding a pixel (a
decompression bomb is refused from its header), text is read up to fixed caps, and the
infotext parser is linear in its input (no backtracking regex over user text).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.generation import (
    MAX_LORAS,
    MAX_PROMPT_CHARS,
    LoraChoice,
    lora_name_problem,
    lora_weight_problem,
)
from core.modes import DEFAULT_MODE, MODES, Mode, parse_options_json
from core.safe_text import quote

log = logging.getLogger(__name__)

PARAMETERS_KEY = "parameters"
RECORD_KEY = "sd35-dashboard"
MAX_IMPORT_BYTES = 20 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What an import reads at most. A `parameters` text holds a prompt and a negative prompt
# (MAX_PROMPT_CHARS each) and a line of settings: 64 K characters is ample, and bounds the
# parser's work whatever the upload. Chunks over MAX_TEXT_CHUNK_BYTES are not decoded.
MAX_INFOTEXT_CHARS = 64 * 1024
MAX_TEXT_CHUNK_BYTES = 256 * 1024
MAX_PNG_CHUNKS = 100_000
# Pillow's decompression-bomb threshold (`Image.MAX_IMAGE_PIXELS`), ~ 9459² pixels.
MAX_IMPORT_PIXELS = 89_478_485

# An A1111 parameter key (`infotext_utils.re_param_code`), matched whole on a short string.
_RE_KEY = re.compile(r"\w[\w \-/]+")
MAX_KEY_CHARS = 64
MAX_PARAMS = 256  # `key: value` items read from one settings line
_RE_BLANKS = re.compile(r"[ \t]*")
_RE_SIZE = re.compile(r"^\s*\(?\s*(\d+)\s*[x×,]\s*(\d+)\s*\)?\s*$")
_NEGATIVE = "Negative prompt:"


class MetadataError(ValueError):
    """An uploaded file holds no settings we can read; the message says why."""


@dataclass(frozen=True)
class ParsedParameters:
    """Generator form values read from an infotext, and the keys we do not use."""

    values: dict[str, Any]
    extras: dict[str, str] = field(default_factory=dict)
    family: str | None = None  # the model family, when our JSON chunk names one
    # LoRAs the image was made with: A1111's `<lora:name:weight>` tags taken out of the
    # prompt (or our JSON chunk's list), and their hashes by name (`Lora hashes`).
    loras: tuple[LoraChoice, ...] = ()
    lora_hashes: Mapping[str, str] = field(default_factory=dict)


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
        except (ValueError, RecursionError):
            return value
    return value


def _closing_quote(line: str, start: int) -> int:
    """Index of the `"` closing the JSON string opened at `start`, or -1 (linear).

    A quote preceded by an odd run of backslashes is escaped; each backslash run sits
    before one quote only, so all the counting together reads each character once.
    """
    at = start + 1
    while True:
        at = line.find('"', at)
        if at < 0:
            return -1
        run = 0
        while line[at - 1 - run] == "\\":
            run += 1
        if run % 2 == 0 and at > start + 1:  # A1111 wants at least one character inside
            return at
        at += 1


def parse_param_line(line: str) -> list[tuple[str, str]]:
    """Read `Key: value, Key: "quoted, value", …` as A1111's `re_param_code` does.

    Written as a `str.find` walk instead of A1111's regex, whose `[\\w \\-/]+` key
    backtracks in quadratic time on a long run of word characters without a colon; this
    reads every character a bounded number of times. Keys must look like A1111's
    (`\\w[\\w \\-/]+`, at most MAX_KEY_CHARS); the value is a JSON string or runs to the
    next comma.
    """
    pairs: list[tuple[str, str]] = []
    pos, end = 0, len(line)
    for _ in range(MAX_PARAMS):  # A1111 writes a few dozen; the rest of the line is ignored
        if pos >= end:
            break
        colon = line.find(":", pos)
        if colon < 0:
            break
        key = line[pos:colon].rpartition(",")[2].strip()  # A1111 skips text before a key
        start = colon + 1
        start = _RE_BLANKS.match(line, start).end()  # one C-speed pass over the blanks
        value_end = -1
        if start < end and line[start] == '"':
            close = _closing_quote(line, start)
            if close >= 0 and (close + 1 == end or line[close + 1] == ","):
                value_end = close + 1
        if value_end < 0:
            comma = line.find(",", start)
            value_end = end if comma < 0 else comma
        if len(key) <= MAX_KEY_CHARS and _RE_KEY.fullmatch(key):
            pairs.append((key, line[start:value_end]))
        pos = value_end + 1
    return pairs


def split_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Split A1111 infotext into (prompt, negative prompt, {key: value}) as A1111 does.

    Linear in the length of `text`; callers cap that length (`MAX_INFOTEXT_CHARS`).
    """
    *lines, last = text.strip().replace("\r\n", "\n").split("\n")
    pairs = parse_param_line(last)
    if len(pairs) < 3:  # A1111's rule: fewer than 3 keys → still prompt
        lines.append(last)
        pairs = []
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()  # once: a line may be megabytes long
        if line.startswith(_NEGATIVE):
            in_negative = True
            line = line[len(_NEGATIVE) :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    params = {key: _unquote(value) for key, value in pairs}
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


def _key(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


def _mode_of(params: Mapping[str, Any]) -> Mode:
    """The mode an infotext was made by: among the modes whose always-written keys
    (`Mode.marks`: A1111's "Denoising strength", "Hires upscale") all appear, the one with
    the most of its keys present, the simpler one on a tie ("Denoising strength" alone is
    image to image, with "Mask blur" inpaint); text to image when none fits."""
    keys = {_key(k) for k in params}
    candidates = [m for m in MODES if all(_key(mark) in keys for mark in m.marks())]

    def fit(mode: Mode) -> tuple[int, int]:
        present = sum(_key(o.infotext) in keys for o in mode.options)
        return present, -len(mode.options)

    return max(candidates, key=fit, default=DEFAULT_MODE)


def _form_values(params: Mapping[str, Any]) -> ParsedParameters:
    """Map infotext keys onto the generator's fields (the mode's options too); keep the rest
    as extras."""
    values: dict[str, Any] = {}
    extras: dict[str, str] = {}
    mode = _mode_of(params)
    options = {_key(o.infotext): o for o in mode.options}
    values["mode"] = mode.id
    for key, raw in params.items():
        name = _key(key)
        if name in options:
            option = options[name]
            converted, problem = option.check(raw)
            if problem is None:
                values[option.name] = converted
            else:
                extras[key] = str(raw)
        elif name in _FIELDS:
            target, convert = _FIELDS[name]
            converted = convert(raw)
            if converted is None:
                extras[key] = str(raw)
            else:
                values[target] = converted
        elif name in ("size", "resolution"):
            match = _RE_SIZE.match(str(raw)[:40])  # a size is short; never scan more
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


def parse_parameters(text: str, *, limit: int | None = MAX_INFOTEXT_CHARS) -> ParsedParameters:
    """Read generator settings from a `parameters` chunk (A1111 text or Fooocus JSON).

    Values are returned as written; `core.share.check_values` says which are in range.
    Text over `limit` characters is refused with `MetadataError` (None: no cap, for the
    parser benchmark); parsing is linear in the length either way.
    """
    if limit is not None and len(text) > limit:
        raise MetadataError(
            f"This PNG's settings text is {len(text):,} characters; at most {limit:,} are "
            f"read (a prompt holds at most {MAX_PROMPT_CHARS:,})."
        )
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except (ValueError, RecursionError):  # bad JSON, a 5000-digit number, deep nesting
            data = None
        if isinstance(data, dict):  # Fooocus "fooocus" scheme: a JSON object
            lowered = {str(k).lower().replace(" ", "_"): v for k, v in data.items()}
            params = {k: v for k, v in lowered.items() if k not in ("prompt", "negative_prompt")}
            parsed = _form_values(params)
            for key in ("prompt", "negative_prompt"):
                if isinstance(lowered.get(key), str):
                    parsed.values[key] = lowered[key]
            return _with_loras(parsed)
    prompt, negative, params = split_infotext(stripped)
    parsed = _form_values(params)
    parsed.values["prompt"] = prompt
    parsed.values["negative_prompt"] = negative
    return _with_loras(parsed)


def _with_loras(parsed: ParsedParameters) -> ParsedParameters:
    """Take A1111's LoRA tags out of the prompt and read `Lora hashes` (linear, bounded)."""
    from core.lora_text import parse_lora_hashes, split_lora_tags

    prompt = parsed.values.get("prompt")
    if not isinstance(prompt, str):
        return parsed
    prompt, loras = split_lora_tags(prompt)
    values = {**parsed.values, "prompt": prompt, "loras": [(c.name, c.weight) for c in loras]}
    hashes = parse_lora_hashes(parsed.extras.get("Lora hashes", ""))
    return dataclasses.replace(parsed, values=values, loras=tuple(loras), lora_hashes=hashes)


def png_info(record_json: str, infotext: str) -> Any:
    """Return a Pillow `PngInfo` holding the `parameters` and record chunks."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PARAMETERS_KEY, infotext)  # Pillow switches to iTXt for non-Latin-1 text
    info.add_text(RECORD_KEY, record_json)
    return info


class _PngText:
    """Text chunks of a PNG (keyword → text) and the keywords too long to read."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.too_long: dict[str, int] = {}


def _inflate(data: bytes, keyword: str, found: _PngText) -> bytes | None:
    """zlib data of a compressed text chunk, inflated to at most MAX_TEXT_CHUNK_BYTES."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT_CHUNK_BYTES + 1)
    except zlib.error as exc:
        raise MetadataError(f"The PNG's {quote(keyword)} text chunk is corrupt ({exc}).") from exc
    if len(out) > MAX_TEXT_CHUNK_BYTES:
        found.too_long[keyword] = len(out)
        return None
    return out


def _text_chunk(kind: bytes, data: bytes, found: _PngText) -> None:
    keyword_bytes, _, rest = data.partition(b"\0")
    keyword = keyword_bytes[:79].decode("latin-1")
    if kind == b"tEXt":
        raw: bytes | None = rest
    elif kind == b"zTXt":  # one byte of compression method, then zlib data
        raw = _inflate(rest[1:], keyword, found)
    else:  # iTXt: flag, method, language\0, translated keyword\0, UTF-8 text
        flag = rest[:1]
        _language, _, rest = rest[2:].partition(b"\0")
        _translated, _, raw = rest.partition(b"\0")
        if flag == b"\x01":
            raw = _inflate(raw, keyword, found)
    if raw is None:
        return
    if len(raw) > MAX_TEXT_CHUNK_BYTES:
        found.too_long[keyword] = len(raw)
        return
    text = raw.decode("latin-1" if kind != b"iTXt" else "utf-8", errors="replace")
    found.texts.setdefault(keyword, text)


def _walk_png(data: bytes) -> _PngText:
    """Read a PNG's text chunks without decoding a pixel: linear, bounded, no Pillow.

    Pillow's `Image.text` decodes the whole image first (text may follow the pixels), which
    is what a decompression bomb is made for; here the image size is only read from IHDR
    and refused above MAX_IMPORT_PIXELS. Raise `MetadataError` saying what is wrong.
    """
    if len(data) > MAX_IMPORT_BYTES:
        raise MetadataError(
            f"The file is {len(data) / 1e6:.1f} MB; the limit is {MAX_IMPORT_BYTES // 2**20} MB."
        )
    if not data:
        raise MetadataError("The file is empty. Upload the PNG the generator saved.")
    if not data.startswith(PNG_SIGNATURE):
        kind = "a JPEG, not a PNG" if data.startswith(b"\xff\xd8\xff") else "not a PNG"
        raise MetadataError(
            f"This file is {kind}, whatever its name says. Settings travel in PNG text "
            "chunks; upload the PNG the generator saved (JPEG and WebP copies lose them)."
        )
    found = _PngText()
    pos, chunks, seen_ihdr = len(PNG_SIGNATURE), 0, False
    while True:
        if pos + 8 > len(data):
            raise MetadataError(
                "The PNG is cut short (it ends before its last chunk): the upload or the "
                "download that made it did not finish. Upload the whole file."
            )
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body_end = pos + 8 + length
        if length > 2**31 - 1 or body_end + 4 > len(data):
            raise MetadataError(
                "The PNG is cut short or damaged (a chunk runs past the end of the file). "
                "Upload the whole file."
            )
        body = data[pos + 8 : body_end]
        crc = int.from_bytes(data[body_end : body_end + 4], "big")
        if zlib.crc32(kind + body) != crc:
            raise MetadataError(
                f"The PNG is damaged: its {quote(kind.decode('latin-1'))} chunk fails its "
                "checksum. Upload the original file."
            )
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise MetadataError(f"The PNG has more than {MAX_PNG_CHUNKS} chunks; refused.")
        if not seen_ihdr:
            if kind != b"IHDR" or length != 13:
                raise MetadataError("The PNG is damaged: it does not start with its header.")
            seen_ihdr = True
            width = int.from_bytes(body[:4], "big")
            height = int.from_bytes(body[4:8], "big")
            if width * height > MAX_IMPORT_PIXELS:
                raise MetadataError(
                    f"The image is {width}×{height} pixels ({width * height / 1e6:.0f} "
                    f"megapixels); images over {MAX_IMPORT_PIXELS / 1e6:.0f} megapixels are "
                    "refused (a decompression bomb can be that small on disk). Upload the "
                    "PNG the generator saved."
                )
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            _text_chunk(kind, body, found)
        elif kind == b"IEND":
            return found
        pos = body_end + 4


def read_png_text(data: bytes) -> dict[str, str]:
    """Return the text chunks of PNG bytes; raise `MetadataError` for a non-PNG or huge file.

    Chunks longer than MAX_TEXT_CHUNK_BYTES are left out (see `parameters_from_png`).
    """
    return _walk_png(data).texts


def parameters_from_png(data: bytes) -> ParsedParameters:
    """Read the settings of an uploaded PNG; raise `MetadataError` saying what is missing."""
    found = _walk_png(data)
    parsed = _parameters_chunk(found)
    return _with_record_chunk(parsed, found.texts.get(RECORD_KEY))


def _with_record_chunk(parsed: ParsedParameters, text: str | None) -> ParsedParameters:
    """Take the family, mode and options from our JSON chunk when it holds them: the
    record itself is exact where the infotext is read back by guesswork. Values are as
    written (`core.share.check_values` says which are valid)."""
    if not text:
        return parsed
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return parsed
    if not isinstance(record, dict):
        return parsed
    family = record.get("family")
    if isinstance(family, str) and len(family) <= 64:
        parsed = dataclasses.replace(parsed, family=family)
    parsed = _record_loras(parsed, record.get("loras"))
    mode = record.get("mode")
    if not isinstance(mode, str) or len(mode) > 64:
        return parsed
    try:
        options = parse_options_json(record.get("mode_options", {}))
    except ValueError:
        return parsed
    names = {o.name for m in MODES for o in m.options}
    values = {k: v for k, v in parsed.values.items() if k not in names}
    values.update({k: v for k, v in options.items() if k in names})
    values["mode"] = mode
    return dataclasses.replace(parsed, values=values)


def _record_loras(parsed: ParsedParameters, entries: Any) -> ParsedParameters:
    """Our JSON chunk's LoRAs (name, weight, full hash) replace what the tags said: they
    are the record itself. Entries that are not valid LoRAs are ignored."""
    if not isinstance(entries, list):
        return parsed
    loras, hashes = [], {}
    for entry in entries[:MAX_LORAS]:
        if not isinstance(entry, dict):
            continue
        name, weight, sha = entry.get("name"), entry.get("weight"), entry.get("sha256")
        if lora_name_problem(name) or lora_weight_problem(weight):
            continue
        loras.append(LoraChoice(name, float(weight)))
        if isinstance(sha, str) and 8 <= len(sha) <= 64:
            hashes[name] = sha.lower()
    values = {**parsed.values, "loras": [(c.name, c.weight) for c in loras]}
    return dataclasses.replace(parsed, values=values, loras=tuple(loras), lora_hashes=hashes)


def _parameters_chunk(found: _PngText) -> ParsedParameters:
    """The `parameters` chunk's settings; `MetadataError` saying what is missing."""
    if PARAMETERS_KEY in found.too_long:
        raise MetadataError(
            f"This PNG's settings text is longer than {MAX_TEXT_CHUNK_BYTES:,} bytes; at most "
            f"{MAX_INFOTEXT_CHARS:,} characters are read (a prompt holds at most "
            f"{MAX_PROMPT_CHARS:,}). It was not made by an image generator as is."
        )
    text = found.texts.get(PARAMETERS_KEY)
    if not text or not text.strip():
        raise MetadataError(
            "This PNG carries no generation settings (no `parameters` text chunk). Images "
            "from this app, A1111, Forge, Fooocus or SD.Next have one, unless a re-save "
            "stripped it."
        )
    return parse_parameters(text)
