"""An imported PNG's LoRAs against the LoRA files here: which to select, which are missing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.generation import Backend, LoraChoice, LoraShelf
from core.lora import LoraError, short_hash
from core.lora_hub import checked_name, is_hub_name
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
    # Hub LoRAs selected but not downloaded yet: fetched from the Hub on Generate.
    from_hub: tuple[str, ...] = ()

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
    hub = [c for c in parsed.loras if is_hub_name(c.name)]
    folder = [c for c in parsed.loras if not is_hub_name(c.name)]
    found = _match_folder(parsed, folder, shelf, backend) if folder else ImportedLoras()
    if not hub:
        return found
    if not shelf.hub:
        note = found.note or shelf.note or "Hub LoRAs are not available here."
        missing = found.missing + tuple(c.name for c in hub)
        return dataclasses.replace(found, missing=missing, note=note)
    recorded = {a1111_alias(name): value for name, value in parsed.lora_hashes.items()}
    valid = [c for c in hub if valid_hub_id(c.name)]
    here = backend.lora_hashes([c.name for c in valid])  # only those already downloaded
    other = tuple(
        c.name
        for c in valid
        if c.name in here
        and recorded.get(a1111_alias(c.name))
        and short_hash(here[c.name]) != short_hash(recorded[a1111_alias(c.name)])
    )
    return dataclasses.replace(
        found,
        selected=found.selected + tuple(valid),
        missing=found.missing + tuple(c.name for c in hub if c not in valid),
        other_version=found.other_version + other,
        from_hub=tuple(c.name for c in valid if c.name not in here),
    )


def valid_hub_id(name: str) -> bool:
    """Whether `name` is a canonical Hub LoRA id (checked, nothing asked of the Hub)."""
    try:
        return checked_name(name) == name
    except LoraError:
        return False


def _match_folder(
    parsed: ParsedParameters, wanted: list[LoraChoice], shelf: LoraShelf, backend: Backend
) -> ImportedLoras:
    names = [choice.name for choice in wanted]
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
    match: LoraMatch = match_loras(wanted, recorded, available)
    return ImportedLoras(match.selected, match.missing, match.other_version)
