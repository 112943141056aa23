"""The local backend's LoRAs: the folder (SD_LORA_DIR), the files read so far, their hashes,
and what is on the pipeline right now.

One `LoraFolder` per backend. The folder is listed at most every LIST_SECONDS (a listing
opens nothing); a file is read and checked once and kept in CPU memory (`LoraCache`) until
it changes; its A1111 hash comes from that read, or from `addnet_hash` for a file not
read yet (an imported PNG asks), cached by path, size and modification time. Thread-safe:
every session's page asks, and generations read files outside the generation slot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.generation import LoraChoice, LoraMemory, LoraShelf
from core.lora import (
    SUFFIX,
    Found,
    LoraCache,
    LoraError,
    LoraFile,
    LoraWeights,
    addnet_hash,
    check_fits,
    discover_loras,
)
from core.lora_hub import HubLoras, checked_name, is_hub_name
from core.safe_text import quote

LIST_SECONDS = 2.0  # a page render lists the folder at most this often
NO_FOLDER = (
    "No LoRA folder is set: set SD_LORA_DIR to a folder of SD3 LoRA .safetensors files "
    "(see README, LoRAs)."
)
COMPILED = (
    "LoRAs are off while SD_COMPILE is on: putting a LoRA on the compiled transformer and "
    "taking it off again each make torch.compile compile it anew (a minute or more per "
    "switch on a GPU, every request that changes LoRAs). Turn SD_COMPILE off to use LoRAs."
)


class LoraFolder:
    """LoRA files under `folder` (None: no folder set) for one backend."""

    def __init__(
        self,
        folder: str | Path | None,
        *,
        cache: LoraCache | None = None,
        hub: HubLoras | None = None,
    ) -> None:
        self.folder = Path(folder).expanduser() if folder else None
        self.cache = cache or LoraCache()
        # Hub ids (`owner/repo/file.safetensors`): downloaded into the HF cache, read alike.
        self.hub = hub
        self._lock = threading.Lock()
        self._listed: tuple[float, Found] | None = None
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._on_device: tuple[tuple[str, int], ...] = ()

    # --- the folder ----------------------------------------------------------------------
    def found(self) -> Found:
        """The folder's listing, at most LIST_SECONDS old."""
        if self.folder is None:
            return Found()
        now = time.monotonic()
        with self._lock:
            if self._listed is not None and now - self._listed[0] < LIST_SECONDS:
                return self._listed[1]
        found = discover_loras(self.folder)
        with self._lock:
            self._listed = (now, found)
        return found

    def shelf(self, *, compiled: bool = False) -> LoraShelf:
        """What the generator may offer (or why nothing)."""
        hub = self.hub is not None and not compiled
        if self.folder is None:
            return LoraShelf(note=COMPILED if compiled else NO_FOLDER, hub=hub)
        found = self.found()
        note = COMPILED if compiled else ""
        if not note and not self.folder.is_dir():
            note = f"The LoRA folder {quote(str(self.folder))} (SD_LORA_DIR) does not exist."
        return LoraShelf(
            names=tuple(f.name for f in found.files),
            refused=tuple((f.name, f.reason) for f in found.refused),
            truncated=found.truncated,
            folder=str(self.folder),
            note=note,
            hub=hub,
        )

    # --- reading for a request ------------------------------------------------------------
    def weights(
        self, choices: Sequence[LoraChoice], pipe: Any, *, compiled: bool = False
    ) -> list[tuple[LoraWeights, float]]:
        """Each chosen LoRA read (once per file version) and checked against `pipe`, with its
        weight; raise `LoraError` naming what cannot be used. Call outside the generation
        slot: reading takes time and touches no shared state of the pipeline."""
        if not choices:
            return []
        if compiled:
            raise LoraError(COMPILED)
        hub_choices = [c for c in choices if is_hub_name(c.name)]
        for choice in hub_choices:  # a malformed or pickle id: refused before any request
            checked_name(choice.name)
        if hub_choices and self.hub is None:
            raise LoraError("Hub LoRAs are not available here; use files in SD_LORA_DIR.")
        if self.folder is None and len(hub_choices) < len(choices):
            raise LoraError(NO_FOLDER)
        files = self.found().by_name() if len(hub_choices) < len(choices) else {}
        missing = [c.name for c in choices if c.name not in files and not is_hub_name(c.name)]
        if missing:
            shown = ", ".join(quote(name + SUFFIX, 60) for name in missing[:5])
            raise LoraError(
                f"Not in the LoRA folder (SD_LORA_DIR) now: {shown}. Put the file back, or "
                "pick another LoRA."
            )
        weights = []
        for choice in choices:
            if is_hub_name(choice.name):
                assert self.hub is not None
                file = self.hub.file(choice.name)  # downloaded (or cached), size checked
            else:
                file = files[choice.name]
            read = self.cache.get(file)
            check_fits(pipe, read)  # another architecture is refused before the slot
            weights.append((read, choice.weight))
        return weights

    # --- hashes for imports ----------------------------------------------------------------
    def hashes(self, names: Sequence[str]) -> dict[str, str]:
        """A1111's hash of each named file that is here (files not read yet are hashed
        once per version; unreadable ones are left out)."""
        files = self.found().by_name() if any(not is_hub_name(n) for n in names) else {}
        found: dict[str, str] = {}
        for name in names:
            file = files.get(name)
            if is_hub_name(name) and self.hub is not None:
                try:  # a Hub LoRA downloaded before (the cache only: no network)
                    cached = self.hub.cached(name)
                except LoraError:
                    cached = None
                file = LoraFile(name, cached, 0) if cached is not None else None
            if file is None:
                continue
            try:
                stat = file.path.stat()
            except OSError:
                continue
            key = (str(file.path), stat.st_size, stat.st_mtime_ns)
            with self._lock:
                known = self._hashes.get(key)
            if known is None:
                try:
                    known = addnet_hash(file.path)
                except (OSError, LoraError):
                    continue
                with self._lock:
                    self._hashes[key] = known
            found[name] = known
        return found

    # --- memory ----------------------------------------------------------------------------
    def on_pipeline(self, loras: tuple[tuple[str, int], ...]) -> None:
        """Note the LoRAs (name, bytes on the device) on the pipeline now; () when removed."""
        with self._lock:
            self._on_device = loras

    def memory(self, device: str = "") -> LoraMemory:
        with self._lock:
            on_device = self._on_device
        return LoraMemory(held=tuple(self.cache.entries()), on_device=on_device, device=device)
