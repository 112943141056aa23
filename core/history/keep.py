"""From a generation to history records: save every image, and say exactly what was kept."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.auth import LOCAL_USER
from core.history import blobs as blob_store
from core.history.errors import HistoryError, PartialSaveError
from core.history.record import HistoryRecord, environment, new_record
from core.history.store import open_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kept:
    """What became of a generation's images: a PNG with settings chunks for each, the
    records that were saved, and a message when some or all were not."""

    pngs: list[bytes]
    records: list[HistoryRecord]
    error: str | None


def _ordinals(numbers: Sequence[int]) -> str:
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def keep_result(
    result: Any,
    *,
    backend: Any,
    target: Any,
    session_id: str,
    owner: str = LOCAL_USER,
    reservation: Any = None,
    grid: tuple[str, int] | None = None,
) -> Kept:
    """Save every image of a `GenerationResult` to the history, in order, as `owner`'s.

    With a `reservation` (`core.limits.reserve`) each saved image converts one of its
    places; the caller releases the rest (`core.limits.release`). `grid` (grid id, cell
    index) links a grid cell's image to its grid.

    Never raises for a storage fault: every image gets PNG bytes carrying its settings
    chunks (the stored file when saved), and `error` says exactly which were saved and
    which were not, and why. Saving stops at the first failure; nothing of the failed
    image stays behind.
    """
    facts = environment(backend)
    seconds: Sequence[float] = result.per_image_seconds or [
        result.generation_seconds / max(len(result.images), 1)
    ] * len(result.images)
    records, pngs, thumbs = [], [], []
    for image, seed, duration in zip(result.images, result.seeds, seconds, strict=True):
        record = new_record(
            result.request,
            seed=seed,
            facts=facts,
            session_id=session_id,
            duration_seconds=duration,
            owner=owner,
            loras=result.loras,
            grid=grid,
        )
        record = dataclasses.replace(record, image_sha256=blob_store.pixel_sha256(image))
        records.append(record)
        pngs.append(blob_store.encode_png(image, record))
        thumbs.append(blob_store.encode_thumbnail(image))
    kept: list[HistoryRecord] = []
    failure: HistoryError | None = None
    request = result.request  # its own source and mask bytes (a source record: a reference)
    inputs = [i.png for i in (request.source, request.mask) if i is not None and not i.record_id]
    try:
        store = open_store(target)
        for record, png, thumb in zip(records, pngs, thumbs, strict=True):
            store.put(record, png, thumb, reservation=reservation, inputs=inputs)
            kept.append(record)
    except HistoryError as exc:
        failure = exc
    if failure is None:
        return Kept(pngs, kept, None)
    total = len(records)
    if not kept:
        summary = (
            "Not saved to the history."
            if total == 1
            else f"None of the {total} images was saved to the history."
        )
    else:
        lost = records[len(kept) :]
        summary = (
            f"Image {_ordinals(range(1, len(kept) + 1))} of {total} "
            f"(seed {', '.join(str(r.seed) for r in kept)}) saved to the history; "
            f"image {_ordinals(range(len(kept) + 1, total + 1))} "
            f"(seed {', '.join(str(r.seed) for r in lost)}) not saved. Their downloads "
            "below still carry their settings."
        )
    log.warning("history save failed after %d of %d images: %s", len(kept), total, failure)
    return Kept(pngs, kept, f"{summary} {failure}")


def save_result(
    result: Any, *, backend: Any, data_dir: Any, session_id: str, owner: str = LOCAL_USER
) -> list[HistoryRecord]:
    """Save every image of a `GenerationResult`; raise `HistoryError` when any is not saved.

    `data_dir` may be a folder or the `Settings` (for `SD_HISTORY_URL`).
    """
    kept = keep_result(result, backend=backend, target=data_dir, session_id=session_id, owner=owner)
    if kept.error is not None:
        if kept.records:
            raise PartialSaveError(kept.error, kept.records)
        raise HistoryError(kept.error)
    return kept.records
