"""A record's source and mask read back from the history, and who may use a record as a
source: what "Regenerate & verify", "Use these settings" and a share link need.

Stored bytes are outside input: a kept source or mask is used only when its bytes still
hash to the name the record gives (`Records.input_png`), a source record's image only when
its pixels still hash to that record's `image_sha256`, and both are read from the header
first (PNG, not a bomb: `core.sources.from_png`).
"""

from __future__ import annotations

from typing import Any

from core.generation import GenerationRequest
from core.history.record import HistoryRecord
from core.sources import ImageInput, InputError, from_png


class InputsMissing(ValueError):  # noqa: N818 - reads as "raise InputsMissing"
    """A record's source or mask cannot be read back; the message says which and why."""


def visible_record(store: Any, record_id: str, visitor: Any) -> HistoryRecord | None:
    """The record `visitor` may see and use as a source, or None.

    Everyone let in sees every live record (README, "What everyone signed in sees"); a
    deleted one only an admin (the gallery lists deleted records to admins alone).
    """
    if not isinstance(record_id, str) or not record_id:
        return None
    record = store.get(record_id, include_deleted=bool(getattr(visitor, "is_admin", False)))
    return record


def record_source(store: Any, record: HistoryRecord) -> ImageInput:
    """`record`'s stored image as a source (a reference to it, its PNG as the bytes);
    `InputsMissing` when it is gone, unreadable or no longer its own pixels."""
    from core.history.blobs import pixel_sha256

    png = store.png_bytes(record.id)
    if png is None:
        raise InputsMissing(f"The image of record {record.id[:8]} is missing from the history.")
    try:
        source = from_png(png, record_id=record.id, what="stored image")
        pixels = source.image("RGB")
    except InputError as exc:
        raise InputsMissing(f"The image of record {record.id[:8]}: {exc}") from None
    if record.image_sha256 and pixel_sha256(pixels) != record.image_sha256:
        raise InputsMissing(
            f"The image of record {record.id[:8]} is not the one it was saved with (its "
            "pixels no longer match the record): it cannot stand in as the source."
        )
    return source


def _kept(store: Any, sha256: str, what: str) -> ImageInput:
    data = store.input_png(sha256)
    if data is None:
        raise InputsMissing(
            f"The {what} this record was made from ({sha256[:12]}…) is missing from the "
            "history, or is not the bytes it was saved as."
        )
    try:
        return from_png(data, what=what)
    except InputError as exc:
        raise InputsMissing(str(exc)) from None


def record_inputs(store: Any, record: HistoryRecord) -> tuple[ImageInput | None, ImageInput | None]:
    """The (source, mask) `record` was made from, read back and checked; (None, None) for
    text to image. The source record is looked up among deleted ones too: a result stays
    reproducible while its source waits in the trash. Raise `InputsMissing` saying why."""
    problems = record.input_problems()
    if problems:
        raise InputsMissing("; ".join(problems))
    source = mask = None
    if record.source_record:
        origin = store.get(record.source_record, include_deleted=True)
        if origin is None:
            raise InputsMissing(
                f"The source record {record.source_record[:8]} is no longer in the history."
            )
        source = record_source(store, origin)
    elif record.source_sha256:
        source = _kept(store, record.source_sha256, "source image")
    if record.mask_sha256:
        mask = _kept(store, record.mask_sha256, "mask")
    return source, mask


def record_request(store: Any, record: HistoryRecord) -> GenerationRequest:
    """The request that remakes `record`, its source and mask read back (`InputsMissing`
    when they cannot be; `InvalidRequest` for settings out of range)."""
    source, mask = record_inputs(store, record)
    return record.request(source=source, mask=mask)
