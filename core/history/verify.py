"""Regenerate & verify: make a record's image again and compare it with the stored one."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from core.history.blobs import open_checked
from core.history.record import HistoryRecord


@dataclass(frozen=True)
class Verification:
    """The outcome of regenerating a record and comparing pixels."""

    identical: bool
    differing_pixels: int
    max_difference: int
    png: bytes
    message: str


def compare_png(expected: bytes, image: Any) -> tuple[int, int]:
    """Return (differing pixels, largest channel difference) between stored PNG and `image`.

    Raise ValueError when the stored bytes are unreadable or too large to decode.
    """
    import numpy as np

    with open_checked(expected) as stored:
        a = np.asarray(stored.convert("RGB"), dtype=np.int16)
    b = np.asarray(image.convert("RGB"), dtype=np.int16)
    if a.shape != b.shape:
        return a.shape[0] * a.shape[1], 255
    diff = np.abs(a - b)
    return int(diff.any(axis=-1).sum()), int(diff.max(initial=0))


def verify(store: Any, record: HistoryRecord, backend: Any) -> Verification:
    """Run the record's request again on `backend` and compare with the stored image.

    The record must be valid (`record.problems()` empty): rows are outside input. A mode
    that worked on an image runs on its stored source and mask (`core.history.inputs`);
    when they cannot be read back, `GenerationError` says why and nothing runs.
    """
    from core.generation import GenerationError
    from core.history.inputs import InputsMissing, record_request

    try:
        request = record_request(store, record)
    except InputsMissing as exc:
        raise GenerationError(f"Nothing to regenerate from: {exc}") from None
    result = backend.generate(request)
    image = result.images[0]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    expected = store.png_bytes(record.id)
    if expected is None:
        return Verification(
            False, 0, 0, buffer.getvalue(), "The stored image is missing: nothing to compare."
        )
    try:
        differing, largest = compare_png(expected, image)
    except (OSError, SyntaxError, ValueError):
        return Verification(
            False,
            0,
            0,
            buffer.getvalue(),
            "The stored image is unreadable or too large to decode: nothing to compare.",
        )
    total = record.width * record.height
    if differing == 0:
        message = "identical: every pixel matches the stored image."
    else:
        message = (
            f"different: {differing} of {total} pixels ({differing / total:.2%}) differ, "
            f"by up to {largest}/255."
        )
    return Verification(differing == 0, differing, largest, buffer.getvalue(), message)
