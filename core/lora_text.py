"""LoRAs in A1111's `parameters` text: `<lora:name:weight>` in the prompt, `Lora hashes`.

A1111 writes the tags the user typed into the prompt and, per LoRA, `alias: <12 hex>` into
`Lora hashes` (`extensions-builtin/Lora/extra_networks_lora.py`); pasting such text selects
the file with that hash even under another name (`lora_script.py` `infotext_pasted`). Both
readers here are linear and bounded: they take uploaded text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.lora import LoraChoice, name_problem, short_hash

_TAG = "<lora:"
MAX_TAG_CHARS = 200  # `<lora:` to `>`; a longer "tag" is left as prompt text
MAX_TAGS = 32  # read from one prompt; the rest stay text
MAX_HASHES_CHARS = 4096
_HEX = set("0123456789abcdefABCDEF")


def _weight_text(weight: float) -> str:
    return f"{weight:g}"


def prompt_with_loras(prompt: str, loras: Sequence[LoraChoice]) -> str:
    """The prompt as A1111 writes it in `parameters`: `a fox <lora:film:0.8>`."""
    tags = " ".join(f"<lora:{c.name}:{_weight_text(c.weight)}>" for c in loras)
    if not tags:
        return prompt
    return f"{prompt} {tags}" if prompt else tags


def split_lora_tags(prompt: str) -> tuple[str, list[LoraChoice]]:
    """Take A1111's `<lora:name>` / `<lora:name:weight>` tags out of a prompt.

    Return the prompt without them (and without the one space before each, or after a
    leading one, so that `prompt_with_loras` round-trips) and the choices in order.
    Linear: each tag's end is looked for within MAX_TAG_CHARS, and at most MAX_TAGS tags
    are read. A tag whose name is not a valid LoRA name or whose weight is not a number
    stays in the text.
    """
    out: list[str] = []
    choices: list[LoraChoice] = []
    pos = 0
    while len(choices) < MAX_TAGS:
        start = prompt.find(_TAG, pos)
        if start < 0:
            break
        end = prompt.find(">", start, start + MAX_TAG_CHARS)
        if end < 0:
            out.append(prompt[pos : start + len(_TAG)])
            pos = start + len(_TAG)
            continue
        body = prompt[start + len(_TAG) : end]
        name, _, rest = body.partition(":")
        weight_text = rest.split(":", 1)[0].strip()  # A1111: <lora:name:unet:te> → first
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            weight = math.nan
        name = name.strip()
        if name_problem(name) or not math.isfinite(weight):
            out.append(prompt[pos : end + 1])
            pos = end + 1
            continue
        before = prompt[pos:start]
        if before.endswith(" "):
            before = before[:-1]
        out.append(before)
        choices.append(LoraChoice(name, weight))
        pos = end + 1
        if not any(out) and prompt.startswith(" ", pos):  # a leading tag takes its space
            pos += 1
    out.append(prompt[pos:])
    return "".join(out), choices


def a1111_alias(name: str) -> str:
    """A name as A1111 writes it in `Lora hashes` (`:` and `,` removed)."""
    return name.replace(":", "").replace(",", "")


def format_lora_hashes(entries: Sequence[tuple[str, str]]) -> str:
    """`Lora hashes` value: `name: 0123456789ab, other: …` (metadata quotes it as a whole)."""
    return ", ".join(f"{a1111_alias(name)}: {short_hash(h)}" for name, h in entries)


def parse_lora_hashes(text: str) -> dict[str, str]:
    """Read a `Lora hashes` value into {name: hash}; bounded, hashes must be hex."""
    found: dict[str, str] = {}
    for item in text[:MAX_HASHES_CHARS].split(",")[: MAX_TAGS * 2]:
        name, sep, value = item.partition(":")
        name, value = name.strip(), value.strip().lower()
        if sep and name and 8 <= len(value) <= 64 and set(value) <= _HEX:
            found.setdefault(name, value)
    return found


@dataclass(frozen=True)
class LoraMatch:
    """An imported image's LoRAs against the files here."""

    selected: tuple[LoraChoice, ...] = ()  # found: by hash (possibly renamed) or by name
    missing: tuple[str, ...] = ()  # no file with that hash or name
    other_version: tuple[str, ...] = ()  # same name, different hash: selected, but warn


def match_loras(
    wanted: Sequence[LoraChoice], hashes: Mapping[str, str], available: Mapping[str, str]
) -> LoraMatch:
    """Select the files that an imported image used, as A1111's paste does.

    `wanted`: the prompt's tags; `hashes`: its `Lora hashes`; `available`: name → hash
    (full or short) of the files here. A tag whose hash matches a file selects that file
    even under another name; else the same name is selected (noted when the recorded hash
    differs); else it is missing.
    """
    by_hash: dict[str, str] = {}
    for name, value in available.items():
        by_hash.setdefault(short_hash(value.lower()), name)
    selected, missing, other = [], [], []
    for choice in wanted:
        recorded = hashes.get(a1111_alias(choice.name))
        found = by_hash.get(short_hash(recorded)) if recorded else None
        if found is not None:
            selected.append(LoraChoice(found, choice.weight))
        elif choice.name in available:
            selected.append(choice)
            if recorded and short_hash(available[choice.name].lower()) != short_hash(recorded):
                other.append(choice.name)
        else:
            missing.append(choice.name)
    return LoraMatch(tuple(selected), tuple(missing), tuple(other))
