"""Inpaint masks: from the browser canvas or an uploaded PNG, inverted, blurred, and the
paste-back that keeps every pixel outside the blurred mask exactly as the source had it.

A mask is a Pillow "L" image at the source image's size: 255 where the image is repainted,
0 where it is kept. The steps follow AUTOMATIC1111's img2img inpainting
(stable-diffusion-webui `modules/processing.py`, read at commit 0027ce1f):

- `create_binary_mask`: an RGBA mask with any transparency is its alpha channel, thresholded
  at > 128; any other mask is its luminance, as is (`binary_mask` here);
- `StableDiffusionProcessingImg2Img.init`: invert ("Inpaint not masked"), then a Gaussian
  blur of `mask_blur` pixels along x and then y, kernel size `2 * int(2.5 * blur + 0.5) + 1`,
  with OpenCV (`cv2.GaussianBlur`; `blur_mask` here does the same sums in numpy, with
  OpenCV's default reflect-101 border). The blurred mask goes to the sampler;
- `mask_for_overlay = clip(blurred * 2, 0, 255)`, and the source is laid over the result
  through its inverse (`overlay_images`, then `apply_overlay`: Pillow's `alpha_composite`).
  So where the blurred mask is 0 the source shows through untouched, and the painted area
  plus about half the blur band is the generated image (`paste_back` here).

numpy and Pillow only: inpainting is local, so numpy (torch's dependency) is always there.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

from core.images import UploadError, check_upload
from core.modes.inpaint import DEFAULT_MASK_BLUR, MAX_MASK_BLUR  # noqa: F401 - the mode declares them; image_modes reads DEFAULT_MASK_BLUR here

log = logging.getLogger(__name__)

# Masks whose shape differs from the image's by more than this are refused, not stretched.
SHAPE_TOLERANCE = 0.01


class MaskError(ValueError):
    """A mask cannot be used; the message says why and what to do."""


# --- making a mask -----------------------------------------------------------------------
def mask_from_canvas(image_data: Any, size: tuple[int, int]) -> Any:
    """The mask painted on `streamlit-drawable-canvas` (its RGBA `image_data`), at `size`.

    Painted pixels have alpha > 0 (the canvas is transparent elsewhere; its background
    image is not part of `image_data`). The canvas is usually drawn smaller than the image:
    the painted area is scaled up (bilinear, then thresholded at half) to the image's size.
    Raise `MaskError` when the canvas has another shape than the image.
    """
    import numpy as np
    from PIL import Image

    data = np.asarray(image_data)
    if data.ndim != 3 or data.shape[2] != 4:
        raise MaskError(
            f"The canvas sent {data.shape} data, not RGBA pixels; clear it and paint again."
        )
    painted = np.where(data[:, :, 3] > 0, 255, 0).astype(np.uint8)
    mask = Image.fromarray(painted, mode="L")
    return _to_size(mask, size, what="canvas")[0]


def binary_mask(image: Any) -> Any:
    """A1111's `create_binary_mask`: alpha (> 128) of a mask with transparency, else luminance.

    16-bit greyscale is scaled to 8 bits first (a plain convert would clip it to white).
    """
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        return image.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha.point(lambda v: 255 if v > 128 else 0)
    return image.convert("L")


@dataclass(frozen=True)
class UploadedMask:
    mask: Any  # "L" at the image's size
    note: str  # "" when it was used as is


def read_mask_upload(
    data: bytes, *, image_size: tuple[int, int], upload_fit: Any = None
) -> UploadedMask:
    """Read an uploaded mask PNG (white = repaint) for an image of `image_size`.

    Same hostile-input rules as image uploads (`core.images.check_upload`). Size, decided:

    - the image's size: used as is;
    - the size of the original upload the image was fitted from (`upload_fit`, a
      `core.images.Fit`): fitted the same way (same crop, bilinear resize), so it stays
      aligned with what it was painted on;
    - another size of the same shape (within 1 %): scaled to the image's size, with a note
      (a mask painted on a smaller preview is common, and the painted area maps exactly);
    - another shape: refused. Stretching it would move the painted area off what it was
      painted on, silently.
    """
    from PIL import Image, ImageOps

    try:
        check_upload(data, what="mask")
    except UploadError as exc:
        raise MaskError(str(exc)) from None
    image = Image.open(io.BytesIO(data))
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as exc:
        log.info("mask upload refused at decode: %s", exc)
        raise MaskError(
            "The mask file is cut short or damaged: the upload or the download that made it "
            "did not finish. Upload the whole file."
        ) from None
    mask = binary_mask(image)
    if upload_fit is not None and mask.size == upload_fit.source and mask.size != image_size:
        fitted = upload_fit.apply(mask, Image.Resampling.BILINEAR)
        return UploadedMask(fitted, "The mask was fitted like the image it was made for.")
    resized, note = _to_size(mask, image_size, what="mask")
    return UploadedMask(resized, note)


def _to_size(mask: Any, size: tuple[int, int], *, what: str) -> tuple[Any, str]:
    """`mask` at `size` when only its scale differs (else `MaskError`); with a note."""
    from PIL import Image

    if mask.size == tuple(size):
        return mask, ""
    (mw, mh), (w, h) = mask.size, size
    if abs((mw / mh) / (w / h) - 1) > SHAPE_TOLERANCE:
        raise MaskError(
            f"The {what} is {mw}×{mh} but the image is {w}×{h}: a different shape, so it "
            "cannot cover the same picture. Make the mask at the image's size (download the "
            "image and paint on it), or paint it here."
        )
    scaled = mask.resize((w, h), Image.Resampling.BILINEAR).point(lambda v: 255 if v >= 128 else 0)
    return scaled, f"The {what} ({mw}×{mh}) was scaled to the image's {w}×{h}."


# --- changing a mask ---------------------------------------------------------------------
def invert_mask(mask: Any) -> Any:
    """Repaint everything but the painted area (A1111 "Inpaint not masked")."""
    from PIL import ImageOps

    return ImageOps.invert(mask.convert("L"))


def is_empty(mask: Any) -> bool:
    """Whether nothing would be repainted."""
    return mask.convert("L").getextrema()[1] == 0


def _gaussian_kernel(sigma: float) -> Any:
    """`cv2.getGaussianKernel(2 * int(2.5 * sigma + 0.5) + 1, sigma)`, as A1111 sizes it."""
    import numpy as np

    radius = int(2.5 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x * x) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def _blur_axis(values: Any, kernel: Any, axis: int) -> Any:
    import numpy as np

    radius = len(kernel) // 2
    size = values.shape[axis]
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    padded = np.pad(values, pad, mode="reflect")  # numpy's "reflect" is OpenCV's reflect-101
    out = np.zeros_like(values)
    for offset, weight in enumerate(kernel):
        if axis == 1:
            out += weight * padded[:, offset : offset + size]
        else:
            out += weight * padded[offset : offset + size, :]
    return out


def blur_mask(mask: Any, blur: int) -> Any:
    """Gaussian blur of `blur` pixels (sigma), along x then y, each rounded to 8 bits as
    A1111's two `cv2.GaussianBlur` calls do. `blur=0` returns the mask unchanged."""
    import numpy as np
    from PIL import Image

    if isinstance(blur, bool) or not isinstance(blur, int) or not 0 <= blur <= MAX_MASK_BLUR:
        raise MaskError(f"Mask blur must be a whole number of pixels in 0–{MAX_MASK_BLUR}.")
    mask = mask.convert("L")
    if blur == 0:
        return mask.copy()
    kernel = _gaussian_kernel(float(blur))
    values = np.asarray(mask, dtype=np.float64)
    for axis in (1, 0):
        values = np.clip(np.rint(_blur_axis(values, kernel, axis)), 0, 255)
    return Image.fromarray(values.astype(np.uint8), mode="L")


def overlay_mask(blurred: Any) -> Any:
    """A1111's `mask_for_overlay`: the blurred mask doubled and clipped (0 stays 0)."""
    return blurred.convert("L").point(lambda v: min(255, v * 2))


def paste_back(generated: Any, source: Any, blurred: Any) -> Any:
    """The generated image laid into the source through the blurred mask, as A1111 does.

    A1111's `overlay_images` + `apply_overlay`: the source, with alpha = 255 − overlay mask
    (premultiplied while it is pasted), is alpha-composited over the generated image. Where
    the blurred mask is 0 the result is the source's pixel, bit for bit; where the doubled
    mask is 255 it is the generated pixel; in between, a blend.
    """
    from PIL import Image, ImageOps

    if generated.size != source.size or blurred.size != source.size:
        raise ValueError(
            f"sizes differ: generated {generated.size}, source {source.size}, mask {blurred.size}"
        )
    keep = ImageOps.invert(overlay_mask(blurred))
    overlay = Image.new("RGBa", source.size)
    overlay.paste(source.convert("RGBA").convert("RGBa"), mask=keep)
    out = generated.convert("RGBA")
    out.alpha_composite(overlay.convert("RGBA"))
    return out.convert("RGB")
