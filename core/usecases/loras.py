"""An imported PNG's LoRAs against the LoRA files here: which to select, which are missing."""

from __future__ import annotations

from dataclasses import dataclass

from core.generation import Backend, LoraChoice
from core.lora_text import LoraMatch, a1111_alias, match_loras
from core.metadata import ParsedParameters


@dataclass(frozen=True)
class ImportedLoras:
    """What the import selects: the LoRAs found here (by hash, else by name), the ones
    missing, the ones here in another version, and why none can be used (`note`)."""

    selected: tuple[LoraChoice, ...] = ()
    missing: tuple[str, ...] = ()
    other_version: tuple[str, ...] = ()
    note: str = ""

    @property
    def wanted(self) -> bool:
        return bool(self.selected or self.missing or self.other_version)


def match_imported(parsed: ParsedParameters, backend: Backend) -> ImportedLoras:
    """Select an imported image's LoRAs among the files here, as A1111's paste does: a file
    with the recorded hash even under another name, else the same name (noted when its
    hash differs), else missing. Files are hashed only when the match needs them."""
    if not parsed.loras:
        return ImportedLoras()
    shelf = backend.loras()
    names = [choice.name for choice in parsed.loras]
    if shelf.note:
        return ImportedLoras(missing=tuple(names), note=shelf.note)
    here = set(shelf.names)
    recorded = {a1111_alias(name): value for name, value in parsed.lora_hashes.items()}
    renamed = any(name not in here and a1111_alias(name) in recorded for name in names)
    # Same names first; the whole folder only when a file may be here under another name.
    hashes = backend.lora_hashes(list(shelf.names) if renamed else [n for n in names if n in here])
    available = {name: hashes.get(name, "") for name in (shelf.names if renamed else hashes)}
    for name in names:
        if name in here:
            available.setdefault(name, "")
    match: LoraMatch = match_loras(parsed.loras, recorded, available)
    return ImportedLoras(match.selected, match.missing, match.other_version)
