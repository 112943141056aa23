"""Model families: one declaration per file, this list, and which family a model is.

`FAMILIES` is the list the rest of the app looks up (ComfyUI's `supported_models.py`
pattern). A new family is a new file here and one line in `FAMILIES`.

Which family runs (`resolve_family`), first match wins:

1. the setting SD_MODEL_FAMILY, when it is not `auto` (Large and Large Turbo share an
   architecture, so only the setting can tell a local folder of Turbo from Large);
2. `demo` → the demo family;
3. a Hub id listed by a family;
4. a local folder's `transformer/config.json`: SD3.5 Medium has dual-attention layers,
   SD3.5 Large has 38 layers (→ Large);
5. otherwise SD3.5 Medium's rules, with a note the pages show.

Plain Python, no torch or diffusers import (`pipeline_class` imports diffusers when called).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.models.base import Family, SizeRules, StepPriors
from core.models.demo import DEMO
from core.models.sd35_large import SD35_LARGE
from core.models.sd35_large_turbo import SD35_LARGE_TURBO
from core.models.sd35_medium import SD35_MEDIUM
from core.safe_text import quote

log = logging.getLogger(__name__)

FAMILIES: list[Family] = [SD35_MEDIUM, SD35_LARGE, SD35_LARGE_TURBO, DEMO]
DEFAULT_FAMILY = SD35_MEDIUM  # a request or record that names no family; unknown models
AUTO = "auto"
DEMO_MODEL = "demo"  # SD_MODEL's value for the demo (core.demo.DEMO_MODEL, without its import)
# A transformer/config.json is a few hundred bytes; anything larger is not one.
MAX_CONFIG_BYTES = 64 * 1024
LARGE_LAYERS = 38

SOURCES = ("setting", "demo", "hub id", "folder", "unknown")

__all__ = [
    "AUTO",
    "DEFAULT_FAMILY",
    "DEMO",
    "FAMILIES",
    "SD35_LARGE",
    "SD35_LARGE_TURBO",
    "SD35_MEDIUM",
    "Family",
    "Resolution",
    "SizeRules",
    "StepPriors",
    "UnknownFamily",
    "family_for",
    "family_ids",
    "full_size",
    "get_family",
    "pipeline_class",
    "resolve_family",
]


def family_ids() -> tuple[str, ...]:
    """Every family id, in `FAMILIES` order."""
    return tuple(f.id for f in FAMILIES)


class UnknownFamily(ValueError):  # noqa: N818 - reads as "raise UnknownFamily"
    """No family has this id; the message names the known ones."""


def get_family(family_id: str) -> Family:
    """The family with this id; `UnknownFamily` naming the known ids when there is none."""
    for family in FAMILIES:
        if family.id == family_id:
            return family
    raise UnknownFamily(
        f"Model family {quote(family_id, 40)} is not known; use one of: {', '.join(family_ids())}."
    )


def full_size(family: Family) -> Family:
    """The real model a family stands for: SD3.5 Medium for the demo, else the family itself."""
    return DEFAULT_FAMILY if family.id == DEMO.id else family


@dataclass(frozen=True)
class Resolution:
    """Which family runs, how that was decided (`source`, one of SOURCES), and a note for
    the pages when the choice deserves one (our own words: no outside text in it)."""

    family: Family
    source: str
    note: str = ""

    @property
    def known(self) -> bool:
        """Whether the family was recognised (False: Medium's rules stand in)."""
        return self.source != "unknown"


def _unknown_note() -> str:
    rules = DEFAULT_FAMILY
    return (
        f"Unknown model family: using {rules.label}'s rules (sizes {rules.sizes.describe()}, "
        f"{rules.steps} steps, guidance {rules.guidance:g}; skip layer guidance starts off, "
        "as its layers may not exist here). If the model is one of the "
        f"families the app knows, set SD_MODEL_FAMILY to it ({', '.join(family_ids())})."
    )


def _unknown_rules() -> Family:
    """Medium's rules for a model nobody recognised, SLG off: Medium's card recommends it
    for Medium's weights, and its layers may not exist in another transformer."""
    return dataclasses.replace(DEFAULT_FAMILY, slg_on=False)


def _read_config(folder: Path) -> dict[str, Any] | None:
    """The folder's transformer config as a dict, or None when it is missing or not one.

    The folder is outside input: the read is capped and any garbage means "unknown".
    """
    path = folder / "transformer" / "config.json"
    try:
        if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        with open(path, "rb") as handle:
            data = json.loads(handle.read(MAX_CONFIG_BYTES + 1).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        log.info("transformer config of %s unreadable: %s", folder, type(exc).__name__)
        return None
    return data if isinstance(data, dict) else None


def _from_config(config: dict[str, Any]) -> Family | None:
    dual = config.get("dual_attention_layers")
    if isinstance(dual, list | tuple) and dual:
        return SD35_MEDIUM  # MMDiT-X: only Medium has dual-attention layers
    layers = config.get("num_layers")
    if isinstance(layers, int) and not isinstance(layers, bool) and layers == LARGE_LAYERS:
        return SD35_LARGE  # Large Turbo has the same config: the setting tells them apart
    return None


def resolve_family(model: str, setting: str = AUTO) -> Resolution:
    """Which family `model` (SD_MODEL) is, with SD_MODEL_FAMILY `setting` winning."""
    if setting != AUTO:
        return Resolution(get_family(setting), "setting")
    if model == DEMO_MODEL:
        return Resolution(DEMO, "demo")
    wanted = model.strip().lower()
    for family in FAMILIES:
        if wanted in (hub_id.lower() for hub_id in family.hub_ids):
            return Resolution(family, "hub id")
    folder = Path(model).expanduser()
    try:
        is_folder = folder.is_dir()
    except (OSError, ValueError):  # a name too long or with a NUL byte: not a folder
        is_folder = False
    if is_folder:
        config = _read_config(folder)
        family = _from_config(config) if config is not None else None
        if family is SD35_LARGE:
            note = (
                f"This folder holds the SD3.5 Large architecture, which {SD35_LARGE_TURBO.label} "
                f"shares: using {SD35_LARGE.label}'s rules. For Turbo, set "
                f"SD_MODEL_FAMILY={SD35_LARGE_TURBO.id}."
            )
            return Resolution(family, "folder", note)
        if family is not None:
            return Resolution(family, "folder")
    return Resolution(_unknown_rules(), "unknown", _unknown_note())


def family_for(settings: Any) -> Resolution:
    """The family of the app's settings (`model` and `model_family`)."""
    return resolve_family(settings.model, settings.model_family)


def pipeline_class(family: Family, mode: str = "txt2img") -> type:
    """The diffusers pipeline class that runs `mode` for `family` (imports diffusers)."""
    import diffusers

    return getattr(diffusers, family.pipeline_name(mode))
