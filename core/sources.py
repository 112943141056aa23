"""The images a request works on besides its prompt: the source (to vary, repaint or
upscale) and the inpaint mask, as PNG bytes with their SHA-256.

A source is a seed-history record (`record_id` set: the record's own stored PNG) or an
image from outside (an upload, fitted by `core.images`; a result the history could not
keep). A record keeps a reference to the source record, or the bytes themselves
(`core.history` stores them once per SHA-256); a mask is always bytes. Plain Python at
import (Pillow is imported when an image is encoded or decoded): requests are built and
checked on the page before anything loads.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from typing import Any

# One cap for any image bytes that come in: an import's (core.metadata.MAX_IMPORT_BYTES).
MAX_INPUT_BYTES = 20 * 1024 * 1024
# The largest image decoded (core.history.blobs.MAX_STORED_PIXELS): a generator image is at
# most 1440², so this only keeps a decompression bomb from being decoded.
MAX_INPUT_PIXELS = 4096 * 4096
KINDS = ("source", "mask")
# A record id as this app makes it (uuid4 hex), with room for other ids of the same shape:
# the only text a file, a zip entry or a link's `source` is ever named from.
RECORD_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def valid_record_id(value: object) -> bool:
    """Whether `value` is a record id this app could have made (safe in a file name)."""
    return isinstance(value, str) and RECORD_ID.fullmatch(value) is not None


class InputError(ValueError):
    """Bytes that cannot be a source or a mask; the message says why, in our words."""


@dataclass(frozen=True)
class ImageInput:
    """A source image or a mask: PNG bytes, their size, and their SHA-256 (the name they are
    stored under). `record_id`: the seed-history record this image is, when it is one."""

    png: bytes = field(repr=False)
    width: int
    height: int
    sha256: str
    record_id: str | None = None
    note: str = ""  # how an upload was fitted (our words), for the page

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def image(self, mode: str = "RGB") -> Any:
        """The pixels as a Pillow image in `mode` ("RGB" for a source, "L" for a mask)."""
        return decode(self.png, mode=mode)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _header(data: bytes, what: str) -> tuple[int, int]:
    """The size a PNG's header gives, without decoding a pixel; `InputError` otherwise."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_INPUT_BYTES:
        raise InputError(
            f"The {what} is {len(data) / 1e6:.1f} MB; at most {MAX_INPUT_BYTES // 2**20} MB."
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise InputError(f"The {what} is not a PNG.")
            width, height = image.size
    except Image.DecompressionBombError:
        raise InputError(f"The {what} is far too large to decode.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"The {what} is not a readable PNG.") from None
    if width * height > MAX_INPUT_PIXELS:
        raise InputError(
            f"The {what} is {width}×{height} pixels: too large to decode (a decompression "
            "bomb, or not an image this app made)."
        )
    return width, height


def from_png(
    data: bytes, *, record_id: str | None = None, note: str = "", what: str = "source image"
) -> ImageInput:
    """An input from PNG bytes (a record's stored file, or bytes read back), checked from
    the header: PNG, at most MAX_INPUT_PIXELS. Raise `InputError` saying why not."""
    width, height = _header(bytes(data), what)
    return ImageInput(
        png=bytes(data),
        width=width,
        height=height,
        sha256=sha256(data),
        record_id=record_id,
        note=note,
    )


def from_image(image: Any, *, record_id: str | None = None, note: str = "") -> ImageInput:
    """An input from Pillow pixels (a fitted upload: RGB; a mask: L), encoded as PNG."""
    mode = "L" if image.mode == "L" else "RGB"
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format="PNG")
    data = buffer.getvalue()
    return ImageInput(
        png=data,
        width=image.width,
        height=image.height,
        sha256=sha256(data),
        record_id=record_id,
        note=note,
    )


def decode(data: bytes, *, mode: str = "RGB") -> Any:
    """Decode checked PNG bytes into `mode`; `InputError` when they are not a usable PNG."""
    from PIL import Image

    _header(data, "image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert(mode)
    except (OSError, SyntaxError, ValueError):
        raise InputError("The image is damaged (it does not decode).") from None
