"""Images from outside to work on (vary, inpaint, upscale): read under the hostile-input rules,
then fitted to a model family's size rules with a note saying exactly what was done.

An upload is outside input. In order, before a pixel is decoded:

- the byte count is capped (`core.metadata.MAX_IMPORT_BYTES`, the same cap as a PNG import);
- the type comes from the first bytes, not the name: PNG, JPEG and WebP are read; a PDF, SVG,
  GIF, HEIC… named `.png` is refused naming what it is and what to upload instead;
- the header is read by `core.history.blobs.image_problem` (the check the gallery uses on
  stored images): an image over `MAX_STORED_PIXELS` (4096², 16.8 MP) is refused from its
  header, so a decompression bomb costs nothing.

Then it is decoded (a truncated or damaged file is refused saying so), turned upright by its
EXIF orientation, brought to 8-bit RGB (16-bit PNGs scaled, palettes expanded) with any
transparency flattened onto white, and fitted: `fit_size` picks the valid size nearest the
image's own (multiple of `multiple`, sides within `min_side`–`max_side`, optionally at most
`max_pixels`), `Fit` crops the centre to that shape and resizes with Lanczos. The same `Fit`
applies to a mask made on the original upload, so the two stay aligned.

Pure Pillow (no numpy, no torch): the light remote-only install can read uploads too.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from dataclasses import dataclass
from typing import Any

from core.history.blobs import MAX_STORED_PIXELS, image_problem
from core.metadata import MAX_IMPORT_BYTES

log = logging.getLogger(__name__)

# SD3.5 Medium's rules, as the request checks them today (core.generation); families pass
# their own (issue 17: `Family` size rules).
MIN_SIDE = 512
MAX_SIDE = 1440
MULTIPLE = 16
# Below this an image has too little in it to work from (a favicon, a 1×1 tracking pixel).
MIN_UPLOAD_SIDE = 64
FLATTEN_COLOUR = (255, 255, 255)  # transparency is flattened onto white, as A1111 does

UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")
UPLOAD_TYPES = ("png", "jpg", "jpeg", "webp")  # for st.file_uploader(type=...)
_FIX = "Upload a PNG, JPEG or WebP image"


class UploadError(ValueError):
    """An upload cannot be used as a source image; the message says why and what to do."""


def sniff(data: bytes) -> str:
    """What the first bytes say the file is: "PNG", "JPEG", "WEBP", or a name for the rest."""
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "a GIF"
    if head.startswith(b"BM"):
        return "a BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "a TIFF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "an AVIF"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
            return "a HEIC/HEIF photo"
        return "a video or other ISO media file"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (or an Office document)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml")) or b"<svg" in data[:1024].lower():
        return "an SVG drawing"
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    return "not an image this app reads"


def _convert_hint(kind: str) -> str:
    if kind == "an SVG drawing":
        return "Export it as PNG first (it is a drawing, not pixels)."
    if kind in ("a HEIC/HEIF photo", "an AVIF"):
        return "Export it as JPEG or PNG first (most photo apps can)."
    if kind in ("a GIF", "a BMP", "a TIFF"):
        return "Save it as PNG first."
    return f"{_FIX}."


# --- fitting to a family's size rules -----------------------------------------------------
def _floor_multiple(value: float, multiple: int) -> int:
    return int(math.floor(value / multiple + 1e-9)) * multiple


def fit_size(
    width: int,
    height: int,
    *,
    min_side: int = MIN_SIDE,
    max_side: int = MAX_SIDE,
    multiple: int = MULTIPLE,
    max_pixels: int | None = None,
) -> tuple[int, int]:
    """The valid size (multiple of `multiple`, each side in `min_side`–`max_side`, at most
    `max_pixels`) nearest to `width`×`height`'s scale and shape.

    Scale down until the long side (and the area) fits; scale up until the short side
    reaches `min_side` (that wins: a thin strip is then cropped to `max_side` long); round
    each side down to a multiple. The aspect ratio changes only by that rounding or that crop.
    """
    scale = 1.0
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
    if max_pixels and width * height * scale * scale > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
    if min(width, height) * scale < min_side:
        scale = min_side / min(width, height)

    def side(value: int) -> int:
        return min(max(_floor_multiple(value * scale, multiple), min_side), max_side)

    target_w, target_h = side(width), side(height)
    while max_pixels and target_w * target_h > max_pixels:  # only after a forced upscale
        if target_w >= target_h and target_w - multiple >= min_side:
            target_w -= multiple
        elif target_h - multiple >= min_side:
            target_h -= multiple
        else:
            break
    return target_w, target_h


@dataclass(frozen=True)
class Fit:
    """How an image of `source` size becomes `size`: crop `box` (source pixels, centred to
    the target's shape), then resize the crop to `size` (Lanczos) unless it already is."""

    source: tuple[int, int]
    box: tuple[int, int, int, int]  # left, top, right, bottom in source pixels
    size: tuple[int, int]

    @property
    def cropped(self) -> bool:
        return self.box != (0, 0, *self.source)

    @property
    def crop_size(self) -> tuple[int, int]:
        left, top, right, bottom = self.box
        return right - left, bottom - top

    @property
    def resized(self) -> bool:
        return self.crop_size != self.size

    @property
    def unchanged(self) -> bool:
        return not self.cropped and not self.resized

    def apply(self, image: Any, resample: int | None = None) -> Any:
        """`image` (of `source` size) cropped and resized as this fit says.

        Lanczos by default; masks pass `Image.Resampling.BILINEAR` or `NEAREST`. An image
        that needs neither is returned as a copy with its pixels untouched.
        """
        from PIL import Image

        if image.size != self.source:
            raise ValueError(f"the image is {image.size}, this fit is for {self.source}")
        if self.unchanged:
            return image.copy()
        if not self.resized:
            return image.crop(self.box)
        method = Image.Resampling.LANCZOS if resample is None else resample
        return image.resize(self.size, method, box=self.box)

    def describe(self) -> str:
        """One line saying exactly what was done: sizes, pixels cropped, resampling."""
        w, h = self.source
        if self.unchanged:
            return f"Kept at {w}×{h}: it fits the size rules as it is."
        parts = []
        if self.cropped:
            left, top, right, bottom = self.box
            cw, ch = self.crop_size
            cuts = []
            if cw != w:
                cuts.append(f"{left} px off the left, {w - right} off the right")
            if ch != h:
                cuts.append(f"{top} px off the top, {h - bottom} off the bottom")
            parts.append(f"cropped {w}×{h} to its centre {cw}×{ch} ({'; '.join(cuts)})")
        if self.resized:
            cw, ch = self.crop_size
            factor = self.size[0] / cw
            verb = "enlarged" if factor > 1 else "shrunk"
            source = "then " if self.cropped else f"{w}×{h} "
            parts.append(
                f"{source}{verb} to {self.size[0]}×{self.size[1]} (Lanczos, ×{factor:.3g})"
            )
        text = ", ".join(parts)
        return text[0].upper() + text[1:] + "."


def plan_fit(
    width: int,
    height: int,
    *,
    min_side: int = MIN_SIDE,
    max_side: int = MAX_SIDE,
    multiple: int = MULTIPLE,
    max_pixels: int | None = None,
) -> Fit:
    """The `Fit` taking a `width`×`height` image to its nearest valid size (`fit_size`)."""
    target_w, target_h = fit_size(
        width,
        height,
        min_side=min_side,
        max_side=max_side,
        multiple=multiple,
        max_pixels=max_pixels,
    )
    # The centred region of the source with the target's shape (integer pixels, so the
    # note can say exactly what was cut); the shape then differs by under one pixel.
    if width * target_h > height * target_w:  # wider than the target: crop the sides
        crop_w, crop_h = min(width, max(1, round(height * target_w / target_h))), height
    else:
        crop_w, crop_h = width, min(height, max(1, round(width * target_h / target_w)))
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return Fit(
        source=(width, height),
        box=(left, top, left + crop_w, top + crop_h),
        size=(target_w, target_h),
    )


# --- reading an upload --------------------------------------------------------------------
@dataclass(frozen=True)
class SourceImage:
    """An upload made ready to work on: RGB, upright, at a valid size."""

    image: Any  # PIL RGB image at `fit.size`
    note: str  # one line for the page: what was done to it
    fit: Fit  # how the upright upload became `image` (apply it to a mask made on the upload)
    format: str  # "PNG", "JPEG" or "WEBP"
    sha256: str  # of the uploaded bytes, for the record (issue 18: source bytes + SHA-256)
    flattened: bool = False  # transparency was flattened onto white
    rotated: bool = False  # the EXIF orientation turned it


def check_upload(data: bytes, *, what: str = "image") -> str:
    """Refuse what must not be decoded; return the format ("PNG", "JPEG", "WEBP").

    Header only: size cap, type from the bytes, pixel cap (`image_problem`, shared with the
    gallery's stored-image check). Raise `UploadError` naming the fix.
    """
    if not data:
        raise UploadError(f"The {what} file is empty. {_FIX}.")
    if len(data) > MAX_IMPORT_BYTES:
        raise UploadError(
            f"The {what} file is {len(data) / 1e6:.1f} MB; the limit is "
            f"{MAX_IMPORT_BYTES // 2**20} MB. Save it smaller (JPEG, or fewer pixels)."
        )
    kind = sniff(data)
    if kind not in UPLOAD_FORMATS:
        raise UploadError(
            f"This {what} file is {kind}, whatever its name says. {_convert_hint(kind)}"
        )
    problem = image_problem(data, expected_format=kind, verify=kind == "PNG")
    if problem == "too large":
        raise UploadError(
            f"The {what} is {_header_size_text(data)}; at most "
            f"{MAX_STORED_PIXELS / 1e6:.1f} megapixels (e.g. 4096×4096) are read, and the "
            "header is checked before decoding so that a decompression bomb costs nothing. "
            "Downscale it first (it is fitted to the model's size rules anyway)."
        )
    if problem is not None:
        raise UploadError(
            f"The {what} file is damaged or not a complete {kind} (its header or a "
            "checksum is wrong). Upload the original file again, or re-save it."
        )
    return kind


def _header_size_text(data: bytes) -> str:
    """`W×H pixels (N megapixels)` from the header, or `too large to read` (a huge bomb)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - Pillow refuses past twice its own bomb limit: say so
        return "too large to read"
    return f"{width}×{height} pixels ({width * height / 1e6:.0f} megapixels)"


def _decode(data: bytes, kind: str, what: str) -> Any:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        log.info("upload refused at decode: %s", exc)
        raise UploadError(
            f"The {what} file is cut short or damaged ({kind} data ends early or is "
            "corrupt): the upload or the download that made it did not finish. Upload the "
            "whole file."
        ) from None
    return image


def _upright(image: Any) -> tuple[Any, bool]:
    """Apply the EXIF orientation (phones store photos sideways and say so in EXIF)."""
    from PIL import ImageOps

    try:
        orientation = image.getexif().get(0x0112, 1)
        turned = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError) as exc:
        log.info("EXIF orientation unreadable, image kept as stored: %s", exc)
        return image, False
    return turned, orientation not in (1, None)


def to_rgb(image: Any) -> tuple[Any, bool]:
    """8-bit RGB, transparency flattened onto white; return it and whether it had any.

    16-bit greyscale (`I;16*`, `I`) is scaled to 8 bits (a plain convert would clip it to
    white); palettes with a transparent index and LA/PA modes count as transparent.
    """
    from PIL import Image

    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        image = image.convert("I").point(lambda v: v * (1 / 257)).convert("L")
        mode = "L"
    elif mode == "F":
        image = image.convert("L")
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if not has_alpha:
        return (image if mode == "RGB" else image.convert("RGB")), False
    rgba = image.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:  # declared, but every pixel is opaque
        return rgba.convert("RGB"), False
    background = Image.new("RGBA", rgba.size, (*FLATTEN_COLOUR, 255))
    return Image.alpha_composite(background, rgba).convert("RGB"), True


def read_upload(
    data: bytes,
    *,
    min_side: int = MIN_SIDE,
    max_side: int = MAX_SIDE,
    multiple: int = MULTIPLE,
    max_pixels: int | None = None,
) -> SourceImage:
    """Read an uploaded PNG/JPEG/WebP as a source image fitted to the size rules.

    Raise `UploadError` (a message for the page, naming the fix) for anything refused.
    """
    kind = check_upload(data)
    decoded = _decode(data, kind, "image")
    upright, rotated = _upright(decoded)
    width, height = upright.size
    if min(width, height) < MIN_UPLOAD_SIDE:
        raise UploadError(
            f"The image is {width}×{height} pixels; its shorter side must be at least "
            f"{MIN_UPLOAD_SIDE} px to work from. Upload a larger image."
        )
    rgb, flattened = to_rgb(upright)
    fit = plan_fit(
        width,
        height,
        min_side=min_side,
        max_side=max_side,
        multiple=multiple,
        max_pixels=max_pixels,
    )
    notes = []
    if rotated:
        notes.append("Turned upright by its EXIF orientation")
    if flattened:
        notes.append("transparent areas flattened onto white")
    fitted = fit.describe()
    notes.append(fitted[0].lower() + fitted[1:] if notes else fitted)
    note = "; ".join(notes)
    return SourceImage(
        image=fit.apply(rgb),
        note=note,
        fit=fit,
        format=kind,
        sha256=hashlib.sha256(data).hexdigest(),
        flattened=flattened,
        rotated=rotated,
    )
