"""This session's recent results: the generator's strip of thumbnails, newest first.

Kept in `st.session_state` (any mutable mapping works), so each browser session has its
own and nothing outlives it. An entry holds a small thumbnail, the result's facts and the
seed-history ids of its images; the full PNGs are read back from the history when an entry
is shown again, so a long session costs a few kilobytes an entry, not megabytes. Only when
the history could not save a result are its PNGs kept in the entry, and then only in the
newest `INLINE_LIMIT` such entries (an older one keeps its thumbnail and settings).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from core.usecases.generate import Generated

RECENT_KEY = "recent_results"
LIMIT = 8  # thumbnails in the strip
INLINE_LIMIT = 2  # record-less entries that keep their full PNGs


@dataclass(frozen=True)
class RecentEntry:
    """One generation of this session, as the strip shows it and can show it again."""

    thumbnail: bytes
    shown: Generated  # what the generator showed, without its PNGs
    form_values: dict[str, Any]  # `core.form.DEFAULTS` keys that remake it
    record_ids: tuple[str | None, ...]  # seed-history id per image (None: not saved)
    pngs: tuple[bytes, ...] | None = field(default=None, repr=False)  # only when not saved
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def label(self) -> str:
        seeds = self.shown.seeds
        more = f" +{len(seeds) - 1}" if len(seeds) > 1 else ""
        return f"Seed {seeds[0] if seeds else '?'}{more}"


def entries(state: MutableMapping[str, Any]) -> list[RecentEntry]:
    """The session's entries, newest first."""
    return list(state.get(RECENT_KEY, ()))


def add(state: MutableMapping[str, Any], entry: RecentEntry, *, limit: int = LIMIT) -> None:
    """Put `entry` first; keep `limit` entries and the PNGs of the newest unsaved ones."""
    kept, inline = [], 0
    for old in [entry, *entries(state)][:limit]:
        if old.pngs is not None:
            inline += 1
            if inline > INLINE_LIMIT:
                old = replace(old, pngs=None)
        kept.append(old)
    state[RECENT_KEY] = kept


def find(state: MutableMapping[str, Any], entry_id: str) -> RecentEntry | None:
    return next((e for e in entries(state) if e.id == entry_id), None)


def recall(
    entry: RecentEntry,
    *,
    load_png: Callable[[str], bytes | None],
    missing: Callable[[], bytes],
) -> Generated:
    """The result to show again: PNGs read back with `load_png(record_id)`.

    An image that is no longer stored (deleted in the gallery, history unavailable) is
    shown as `missing()` and has no download (`downloadable` is False for it).
    """
    pngs: list[bytes] = []
    downloadable: list[bool] = []
    for i, record_id in enumerate(entry.record_ids):
        png = load_png(record_id) if record_id else None
        if png is None and entry.pngs is not None and i < len(entry.pngs):
            png = entry.pngs[i]
        downloadable.append(png is not None)
        pngs.append(png if png is not None else missing())
    return replace(
        entry.shown,
        pngs=tuple(pngs),
        downloadable=tuple(downloadable),
        recalled=entry.id,
        form_values=dict(entry.form_values),
        record_ids=tuple(entry.record_ids),
    )


def form_values_of(seeds: Sequence[int], request: Any) -> dict[str, Any]:
    """The generator form's values that remake `request` from its first seed."""
    return {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": int(seeds[0]) if seeds else request.seed,
        "randomize_seed": False,
        "width": request.width,
        "height": request.height,
        "guidance_scale": float(request.guidance_scale),
        "steps": request.num_inference_steps,
        "num_images": request.num_images,
        "mode": request.mode,
        **request.mode_options,
    }


def entry_for(
    shown: Generated,
    *,
    request: Any,
    thumbnail: bytes,
    record_ids: Sequence[str | None],
) -> RecentEntry:
    """A strip entry for the result the generator just showed."""
    count = len(shown.pngs)
    ids = (tuple(record_ids) + (None,) * count)[:count]  # a partial save: None for the rest
    return RecentEntry(
        thumbnail=thumbnail,
        shown=replace(shown, pngs=()),
        form_values=form_values_of(shown.seeds, request),
        record_ids=ids,
        pngs=None if all(ids) else tuple(shown.pngs),
    )
