"""Inpaint masks (issue 18): from the canvas or an uploaded PNG (hostile rules, size decided),
inverted, blurred as A1111 does, and pasted back so the source survives outside the mask."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core import masks
from core.images import plan_fit
from core.masks import MaskError, read_mask_upload
from testkit.hostile import bomb_png


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def square_mask(size=(64, 48), box=(20, 10, 40, 30)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


# --- from the canvas -------------------------------------------------------------------------
def test_canvas_strokes_become_the_mask_scaled_to_the_image():
    data = np.zeros((100, 150, 4), dtype=np.uint8)
    data[20:40, 30:60] = (255, 0, 0, 255)
    data[50, 70] = (0, 0, 0, 1)  # the faintest anti-aliased edge still counts as painted
    mask = masks.mask_from_canvas(data, (300, 200))
    values = np.asarray(mask)
    assert mask.size == (300, 200) and set(np.unique(values)) == {0, 255}
    assert values[60, 90] == 255 and values[10, 10] == 0
    assert values[100:102, 140:142].all()


def test_canvas_of_another_shape_is_refused():
    with pytest.raises(MaskError, match="different shape"):
        masks.mask_from_canvas(np.zeros((100, 100, 4), dtype=np.uint8), (300, 200))


# --- uploaded ---------------------------------------------------------------------------------
def test_uploaded_mask_of_the_image_size_is_used_as_is():
    uploaded = read_mask_upload(png(square_mask()), image_size=(64, 48))
    assert uploaded.note == "" and np.array_equal(np.asarray(uploaded.mask), square_mask())


def test_uploaded_mask_with_transparency_uses_its_alpha_like_a1111():
    rgba = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 200), (20, 10, 40, 30))  # black but painted: alpha decides
    uploaded = read_mask_upload(png(rgba), image_size=(64, 48))
    assert np.array_equal(np.asarray(uploaded.mask), square_mask())


def test_uploaded_mask_of_the_same_shape_is_scaled_with_a_note():
    uploaded = read_mask_upload(png(square_mask((32, 24), (10, 5, 20, 15))), image_size=(64, 48))
    assert uploaded.note == "The mask (32×24) was scaled to the image's 64×48."
    assert np.asarray(uploaded.mask)[20, 30] == 255 and np.asarray(uploaded.mask)[2, 2] == 0


def test_uploaded_mask_of_the_original_upload_is_fitted_like_the_image():
    fit = plan_fit(1000, 800)  # the image became its centre 992×800
    mask = Image.new("L", (1000, 800), 0)
    mask.paste(255, (0, 0, 10, 800))  # a stripe on the far left: 4 px of it were cropped
    uploaded = read_mask_upload(png(mask), image_size=(992, 800), upload_fit=fit)
    values = np.asarray(uploaded.mask)
    assert uploaded.mask.size == (992, 800) and "fitted like the image" in uploaded.note
    assert values[0, :6].all() and not values[0, 6:].any()


def test_uploaded_mask_of_another_shape_is_refused_naming_both_sizes():
    with pytest.raises(MaskError) as caught:
        read_mask_upload(png(square_mask((64, 64))), image_size=(64, 48))
    assert "64×64" in str(caught.value) and "64×48" in str(caught.value)
    assert "image's size" in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [bomb_png(24_000), png(square_mask())[:-20], b"%PDF-1.4\n", b""],
    ids=["bomb", "truncated", "pdf", "empty"],
)
def test_hostile_mask_uploads_are_refused_with_a_message(data):
    with pytest.raises(MaskError) as caught:
        read_mask_upload(data, image_size=(64, 48))
    assert "mask" in str(caught.value)


# --- invert and blur --------------------------------------------------------------------------
def test_invert_swaps_repaint_and_keep():
    inverted = np.asarray(masks.invert_mask(square_mask()))
    assert inverted[0, 0] == 255 and inverted[20, 30] == 0


def test_blur_zero_changes_nothing_and_blur_spreads_by_about_its_kernel():
    assert np.array_equal(np.asarray(masks.blur_mask(square_mask(), 0)), square_mask())
    blurred = np.asarray(masks.blur_mask(square_mask(), 4))
    radius = int(2.5 * 4 + 0.5)  # A1111's kernel: 2 * int(2.5 * blur + 0.5) + 1 taps
    assert blurred[20, 30] > 200  # inside stays high
    assert blurred[20, 20 - radius - 1] == 0  # beyond the kernel's reach: untouched
    assert 0 < blurred[20, 19] < 255  # the edge is soft


def test_blur_is_symmetric_about_a_centred_square():
    blurred = np.asarray(masks.blur_mask(square_mask((60, 60), (20, 20, 40, 40)), 3))
    assert np.array_equal(blurred, blurred[::-1, ::-1])
    # x then y, each pass rounded to 8 bits (A1111's two cv2 calls): x/y differ by rounding only
    assert np.abs(blurred.astype(int) - blurred.T).max() <= 1


@pytest.mark.parametrize("blur", [-1, 65, 2.5, True])
def test_blur_out_of_range_is_refused(blur):
    with pytest.raises(MaskError, match="0–64"):
        masks.blur_mask(square_mask(), blur)


def test_empty_mask_is_detected():
    assert masks.is_empty(Image.new("L", (8, 8), 0)) and not masks.is_empty(square_mask())


# --- paste-back -------------------------------------------------------------------------------
def test_paste_back_keeps_the_source_outside_and_the_result_inside():
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    generated = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    blurred = masks.blur_mask(square_mask(), 4)
    out = np.asarray(masks.paste_back(generated, source, blurred))
    outside = np.asarray(blurred) == 0
    inside = np.asarray(masks.overlay_mask(blurred)) == 255
    assert outside.sum() > 1000 and inside.sum() > 300
    assert np.array_equal(out[outside], np.asarray(source)[outside])
    assert np.array_equal(out[inside], np.asarray(generated)[inside])
    band = ~outside & ~inside
    assert not np.array_equal(out[band], np.asarray(source)[band])  # the blend band blends
