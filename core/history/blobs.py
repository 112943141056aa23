"""Image bytes of the history: encoding, safe decoding, and atomic file writes.

Where the bytes live is the engine's business (`core.history.storage`: files beside a
local SQLite, a table in PostgreSQL).

Stored bytes are outside input (a disk can be edited): `safe_image` reads only the header
and refuses anything that is not the expected format or is too large to decode (a
decompression bomb), so the gallery draws a placeholder instead of raising.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import uuid
from pathlib import Path
from typing import Any

THUMB_SIZE = 256
TMP_SUFFIX = ".tmp"
# Largest stored image the gallery will decode: far above what the generator makes
# (1440²) and far below Pillow's bomb threshold.
MAX_STORED_PIXELS = 4096 * 4096


def valid_sha256(value: object) -> bool:
    """Whether `value` is a SHA-256 as this app writes it (64 lowercase hex digits): the
    only text a kept source or mask is named by, in a file name or a row."""
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def encode_png(image: Any, record: Any) -> bytes:
    """PNG bytes of `image` carrying the A1111 `parameters` and full-record chunks."""
    from core import metadata

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=metadata.png_info(record.to_json(), record.infotext()))
    return buffer.getvalue()


def sha256_of(data: bytes) -> str:
    """SHA-256 of bytes (a kept source's or mask's name)."""
    return hashlib.sha256(data).hexdigest()


def pixel_sha256(image: Any) -> str:
    """SHA-256 of the image's RGB pixel bytes."""
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def encode_thumbnail(image: Any) -> bytes:
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
    buffer = io.BytesIO()
    thumb.save(buffer, format="WEBP", quality=80)
    return buffer.getvalue()


@functools.lru_cache(maxsize=16)
def placeholder_image(size: int = THUMB_SIZE, text: str = "image missing") -> bytes:
    """A grey PNG standing in for a missing or unreadable image (drawn once per kind)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (60, 60, 66))
    ImageDraw.Draw(image).text((12, size // 2 - 6), text, fill=(200, 200, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_problem(data: bytes, *, expected_format: str, verify: bool = False) -> str | None:
    """Why `data` must not be drawn ("unreadable", "too large"), or None when it is fine.

    Reads the header only (plus chunk checksums with `verify`); never decodes pixels, so a
    decompression bomb costs nothing.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != expected_format:
                return "unreadable"
            width, height = image.size
            if width * height > MAX_STORED_PIXELS:
                return "too large"
            if verify:
                image.verify()
    except Image.DecompressionBombError:
        return "too large"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return "unreadable"
    return None


def open_checked(data: bytes) -> Any:
    """Open stored PNG bytes for decoding; raise ValueError when unreadable or a bomb."""
    from PIL import Image

    problem = image_problem(data, expected_format="PNG")
    if problem is not None:
        raise ValueError(f"the stored image is {problem}")
    return Image.open(io.BytesIO(data))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, and rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
