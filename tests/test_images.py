"""Source images from outside (issue 18): hostile uploads refused before decoding, the rest
upright, RGB, flattened and fitted to the size rules with a note that says what was done."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core import images
from core.images import UploadError, fit_size, plan_fit, read_upload
from testkit.hostile import PNG_SIGNATURE, bomb_png, chunk, jpeg_bytes

SMALL_RULES = {"min_side": 64, "max_side": 1440, "multiple": 16}


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_16bit(width: int, height: int, *, colour: tuple[int, ...]) -> bytes:
    """A real 16-bit PNG (greyscale: one value; RGB: three), written chunk by chunk."""
    colour_type = 0 if len(colour) == 1 else 2
    pixel = b"".join(struct.pack(">H", v) for v in colour)
    raw = b"".join(b"\0" + pixel * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


# --- refused before decoding --------------------------------------------------------------
def test_decompression_bomb_is_refused_from_its_header():
    with pytest.raises(UploadError, match="decompression bomb") as caught:
        read_upload(bomb_png(24_000))
    assert "Downscale" in str(caught.value)


def test_huge_dimensions_are_refused_naming_them():
    with pytest.raises(UploadError, match=r"4200×4200 pixels \(18 megapixels\)"):
        read_upload(bomb_png(4200, text=None))


def test_oversized_file_is_refused_by_its_byte_count():
    with pytest.raises(UploadError, match="the limit is 20 MB"):
        read_upload(PNG_SIGNATURE + b"\0" * (21 * 2**20))


def test_empty_file_is_refused():
    with pytest.raises(UploadError, match="empty"):
        read_upload(b"")


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "a PDF document"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "an SVG drawing"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "an SVG drawing"),
        (b"GIF89a" + b"\0" * 40, "a GIF"),
        (b"\0\0\0\x18ftypheic" + b"\0" * 40, "a HEIC/HEIF photo"),
        (bytes(range(256)) * 4, "not an image this app reads"),
    ],
    ids=["pdf", "svg-xml", "svg", "gif", "heic", "garbage"],
)
def test_wrong_type_is_refused_by_its_bytes_whatever_its_name(data, named):
    with pytest.raises(UploadError) as caught:
        read_upload(data)
    message = str(caught.value)
    assert named in message and "whatever its name says" in message
    assert "PNG" in message  # names the fix


def test_truncated_png_is_refused_saying_so():
    whole = encode(Image.new("RGB", (128, 128), (10, 20, 30)))
    with pytest.raises(UploadError, match="Upload the"):
        read_upload(whole[: len(whole) // 2])


def test_truncated_jpeg_is_refused_at_decode_saying_so():
    noisy = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    whole = encode(Image.fromarray(noisy), "JPEG", quality=95)
    with pytest.raises(UploadError, match="cut short or damaged"):
        read_upload(whole[: len(whole) // 2])


def test_tiny_image_is_refused():
    with pytest.raises(UploadError, match="at least 64 px"):
        read_upload(jpeg_bytes())  # 16×16


# --- decoded, upright, RGB -----------------------------------------------------------------
def test_exif_rotated_jpeg_is_turned_upright():
    # Stored 128×64, red left half; orientation 6 = "rotate 90° clockwise to view".
    stored = Image.new("RGB", (128, 64), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 64, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    source = read_upload(encode(stored, "JPEG", quality=95, exif=exif.tobytes()), **SMALL_RULES)
    assert source.image.size == (64, 128) and source.rotated
    top, bottom = source.image.getpixel((32, 16)), source.image.getpixel((32, 112))
    assert top[0] > 200 and top[2] < 60  # the red half is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    assert source.note.startswith("Turned upright by its EXIF orientation")


def test_rgba_png_is_flattened_onto_white_and_says_so():
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((200, 10, 10, 255), (0, 0, 32, 64))
    source = read_upload(encode(image), **SMALL_RULES)
    assert source.flattened and "transparent areas flattened onto white" in source.note
    assert source.image.mode == "RGB"
    assert source.image.getpixel((48, 10)) == (255, 255, 255)
    assert source.image.getpixel((10, 10)) == (200, 10, 10)


def test_opaque_rgba_png_is_not_called_flattened():
    source = read_upload(encode(Image.new("RGBA", (64, 64), (1, 2, 3, 255))), **SMALL_RULES)
    assert not source.flattened and "flattened" not in source.note


def test_palette_png_keeps_its_colours_and_its_transparency_is_flattened():
    plain = Image.new("P", (64, 64), 1)
    plain.putpalette([0, 0, 0, 40, 90, 160] + [0] * 762)
    assert read_upload(encode(plain), **SMALL_RULES).image.getpixel((5, 5)) == (40, 90, 160)
    see_through = plain.copy()
    see_through.paste(0, (0, 0, 32, 64))
    data = encode(see_through, transparency=0)
    source = read_upload(data, **SMALL_RULES)
    assert source.flattened
    assert source.image.getpixel((5, 5)) == (255, 255, 255)
    assert source.image.getpixel((40, 5)) == (40, 90, 160)


def test_16bit_greyscale_png_is_scaled_not_clipped_to_white():
    source = read_upload(png_16bit(64, 64, colour=(32768,)), **SMALL_RULES)
    assert source.image.getpixel((3, 3)) == (127, 127, 127)


def test_16bit_rgb_png_reads_its_colour():
    source = read_upload(png_16bit(64, 64, colour=(65535, 32768, 0)), **SMALL_RULES)
    red, green, blue = source.image.getpixel((3, 3))
    assert red == 255 and 126 <= green <= 128 and blue == 0


def test_webp_is_read_and_the_sha256_is_of_the_uploaded_bytes():
    import hashlib

    data = encode(Image.new("RGB", (512, 512), (9, 99, 199)), "WEBP", lossless=True)
    source = read_upload(data)
    assert source.format == "WEBP" and source.image.getpixel((0, 0)) == (9, 99, 199)
    assert source.sha256 == hashlib.sha256(data).hexdigest()


# --- fitted to the size rules ---------------------------------------------------------------
def test_a_valid_size_is_kept_pixel_for_pixel():
    noisy = np.random.default_rng(1).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    source = read_upload(encode(Image.fromarray(noisy)))
    assert np.array_equal(np.asarray(source.image), noisy)
    assert source.note == "Kept at 1024×768: it fits the size rules as it is."


def test_a_phone_photo_is_cropped_then_shrunk_and_the_note_says_exactly_how():
    fit = plan_fit(4032, 3024)
    assert fit.size == (1440, 1072)
    assert fit.describe() == (
        "Cropped 4032×3024 to its centre 4032×3002 (11 px off the top, 11 off the bottom), "
        "then shrunk to 1440×1072 (Lanczos, ×0.357)."
    )


def test_a_few_extra_pixels_are_cropped_without_resampling():
    noisy = np.random.default_rng(2).integers(0, 256, (800, 1000, 3), dtype=np.uint8)
    source = read_upload(encode(Image.fromarray(noisy)))
    assert source.image.size == (992, 800)
    assert np.array_equal(np.asarray(source.image), noisy[:, 4:996])
    assert (
        source.note
        == "Cropped 1000×800 to its centre 992×800 (4 px off the left, 4 off the right)."
    )


def test_a_small_image_is_enlarged_to_the_minimum():
    source = read_upload(encode(Image.new("RGB", (256, 200), (5, 5, 5))))
    assert source.image.size == (640, 512)
    assert "enlarged to 640×512 (Lanczos" in source.note


@pytest.mark.parametrize(
    ("size", "rules", "expected"),
    [
        ((1024, 1024), {}, (1024, 1024)),
        ((2000, 2000), {}, (1440, 1440)),
        ((3000, 1000), {}, (1440, 512)),  # the short side wins: the long one is cropped
        ((2000, 2000), {"max_pixels": 1024 * 1024}, (1024, 1024)),
        ((1000, 700), {"multiple": 64}, (960, 640)),
    ],
)
def test_fit_size_follows_the_rules(size, rules, expected):
    width, height = fit_size(*size, **rules)
    assert (width, height) == expected
    multiple = rules.get("multiple", images.MULTIPLE)
    assert width % multiple == 0 and height % multiple == 0
    assert min(width, height) >= 512 and max(width, height) <= 1440


def test_the_fit_applies_to_a_mask_of_the_original_upload_too():
    fit = plan_fit(1000, 800)
    mask = Image.new("L", (1000, 800), 0)
    mask.paste(255, (496, 0, 1000, 800))
    fitted = fit.apply(mask, Image.Resampling.NEAREST)
    assert fitted.size == (992, 800) and fitted.getpixel((491, 0)) == 0
    assert fitted.getpixel((492, 0)) == 255
