"""The generator's controls for working on an image (issue 18), under AppTest: Vary /
Inpaint / Upscale from a result and from the Seed history, uploads and their notes,
hostile uploads of images and masks, shared links with a source, remote mode's plain
words, and skip-layer guidance's toggle."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.masks import blur_mask
from testkit.hostile import bomb_png
from tests.conftest import current_store, fill_small

GALLERY = "pages/gallery.py"


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _captions(at) -> str:
    return "\n".join(c.value for c in at.caption)


def _generated(app, **fill):
    at = fill_small(app(), **fill)
    at.button(key="generate").click().run()
    assert not at.exception and not at.error
    return at


def test_vary_on_a_result_makes_an_image_to_image_record_of_it(app):
    """Vary under a result: the mode, its strength and the steps that run are shown; the
    next Generate keeps a record naming the result as its source, its PNG says so."""
    at = _generated(app, seed=7)
    (first,) = current_store().page().records
    at.button(key="work_0_img2img").click().run()
    assert at.session_state["mode"] == "img2img" and at.session_state["strength"] == 0.6
    assert "Working on 512×512: Seed 7 (this session)" in _captions(at)
    assert "2 steps × 0.6 = 2 steps run" in _captions(at)
    assert at.number_input(key="width").disabled  # the size is the image's
    at.slider(key="strength").set_value(0.5).run()
    assert "2 steps × 0.5 = 1 step run" in _captions(at)
    at.button(key="generate").click().run()
    assert not at.exception and not at.error
    newest = current_store().page().records[0]
    assert (newest.mode, newest.source_record, newest.source_sha256) == ("img2img", first.id, "")
    png = at.session_state["last_result"].pngs[0]
    assert "Denoising strength: 0.5" in Image.open(io.BytesIO(png)).info["parameters"]


def test_the_time_estimate_counts_the_steps_that_run(app):
    """Vary at strength 0.6 of 40 steps runs 24: the estimate before the click says 24 steps
    (at the image's size), and text to image again says 40."""
    at = _generated(app, seed=7)
    at.button(key="work_0_img2img").click().run()
    at.slider(key="steps").set_value(40).run()
    assert "40 steps × 0.6 = 24 steps run" in _captions(at)
    shown = _captions(at) + "\n".join(i.value for i in at.info)
    assert "at 512², 24 steps on this CPU" in shown, shown
    at.get("button_group")[0].set_value("txt2img").run()
    shown = _captions(at) + "\n".join(i.value for i in at.info)
    assert "at 512², 40 steps on this CPU" in shown and "24 steps on" not in shown, shown


def test_an_upload_is_fitted_with_a_note_and_inpainted_through_an_uploaded_mask(app):
    """A 700×500 JPEG becomes a valid-size source with the note saying how; a mask PNG
    painted on the original is fitted alike; Inpaint keeps every pixel outside its blur."""
    at = app()
    at.get("button_group")[0].set_value("inpaint").run()
    photo = Image.new("RGB", (700, 500), (30, 90, 160))
    at.file_uploader(key="source_upload").set_value(("p.jpg", _png(photo, "JPEG"), "image/jpeg"))
    at.run()
    assert not at.exception
    source = at.session_state["work_source"]
    assert source.size == (704, 512)  # short side up to 512, each side a multiple of 16
    assert "Upload · " in _captions(at) and "704×512" in _captions(at)
    mask = Image.new("L", (700, 500), 0)
    ImageDraw.Draw(mask).rectangle((200, 150, 400, 300), fill=255)
    at.file_uploader(key="mask_upload").set_value(("m.png", _png(mask), "image/png")).run()
    assert "fitted like the image it was made for" in _captions(at)
    assert "Repainting" in _captions(at)
    at.text_area(key="prompt").input("a red fox")
    at.slider(key="steps").set_value(2)
    at.button(key="generate").click().run()
    assert not at.exception and not at.error
    record = current_store().page().records[0]
    assert (record.mode, record.source_sha256) == ("inpaint", source.sha256)
    made = Image.open(io.BytesIO(at.session_state["last_result"].pngs[0])).convert("RGB")
    kept = at.session_state["work_mask"].image("L")
    blurred = np.asarray(blur_mask(kept, 4))
    src = np.asarray(source.image("RGB"))
    assert (np.asarray(made)[blurred == 0] == src[blurred == 0]).all()


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("bomb.png", bomb_png(20_000, text=None), "megapixels"),
        ("cut.png", _png(Image.new("RGB", (600, 600), "red"))[:2000], "damaged or not a complete"),
        ("doc.png", b"%PDF-1.7\n" + b"x" * 500, "a PDF document"),
        ("tiny.png", _png(Image.new("RGB", (40, 40))), "at least 64 px"),
    ],
)
def test_hostile_image_uploads_are_refused_in_our_words(app, name, data, words):
    """A bomb, a truncated file, a PDF named .png, a favicon: refused, nothing decoded."""
    at = app()
    at.get("button_group")[0].set_value("img2img").run()
    at.file_uploader(key="source_upload").set_value((name, data, "image/png")).run()
    assert not at.exception
    assert words in at.error[0].value
    assert at.session_state["work_source"] is None if "work_source" in at.session_state else True


@pytest.mark.parametrize(
    ("mask", "words"),
    [
        (_png(Image.new("L", (300, 500))), "a different shape"),
        (bomb_png(20_000, text=None), "megapixels"),
        (_png(Image.new("L", (512, 512)))[:300], "damaged or not a complete"),
    ],
)
def test_hostile_or_mismatched_masks_are_refused(app, mask, words):
    """A mask of another shape, a bomb, a truncated mask: refused with the reason."""
    at = _generated(app)
    at.button(key="work_0_inpaint").click().run()
    at.file_uploader(key="mask_upload").set_value(("m.png", mask, "image/png")).run()
    assert not at.exception
    assert any(words in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state.get("work_mask") is None


def test_upscale_shows_the_target_size_and_keeps_the_seed(app):
    """Upscale ×1.25 of a 512² result is 640²; the form keeps the result's seed."""
    at = _generated(app, seed=11)
    at.button(key="work_0_upscale").click().run()
    assert at.session_state["mode"] == "upscale"
    assert at.session_state["randomize_seed"] is False and at.session_state["seed"] == 11
    assert "512×512 → 640×640" in _captions(at)
    at.button(key="generate").click().run()
    assert not at.error
    assert at.session_state["last_result"].size == "640×640"


def test_the_seed_history_sends_a_record_to_work_on_and_a_link_opens_it(app):
    """Details → Vary opens the generator on that record; a link's `source` opens only a
    record the visitor can see, without saying whether another one exists."""
    at = _generated(app)
    (record,) = current_store().page().records
    at.switch_page(GALLERY).run()
    at.button(key=f"open_{record.id}").click().run()
    at.button(key="details_work_img2img").click().run()
    assert not at.exception
    assert at.session_state["mode"] == "img2img"
    assert at.session_state["work_source"].record_id == record.id
    linked = app()
    linked.query_params.update({"mode": "img2img", "source": record.id})
    linked.run()
    assert linked.session_state["work_source"].record_id == record.id
    unknown = app()
    unknown.query_params.update({"mode": "img2img", "source": "f" * 32})
    unknown.run()
    assert "not in the Seed history you can see" in unknown.warning[0].value
    assert unknown.session_state.get("work_source") is None


def test_slg_starts_as_the_family_says_and_says_when_guidance_is_off(app, monkeypatch):
    """Demo: off. SD3.5 Medium's rules: on with layers 7 8 9; guidance 0 says it won't run."""
    at = app()
    assert at.toggle(key="slg_on").value is False
    monkeypatch.setenv("SD_MODEL_FAMILY", "sd35-medium")
    at = app()
    assert at.toggle(key="slg_on").value is True
    assert at.text_input(key="slg_layers").value == "7 8 9"
    assert at.session_state["slg"] == "layers 7 8 9; scale 2.8; start 0.01; stop 0.2"
    at.slider(key="guidance_scale").set_value(0.0).run()
    assert "runs only with guidance on" in _captions(at)
    at.text_input(key="slg_layers").input("7, x").run()
    assert "not changed" in at.error[0].value
    assert at.session_state["slg"] == "layers 7 8 9; scale 2.8; start 0.01; stop 0.2"


def test_remote_mode_says_what_it_cannot_do(app, monkeypatch):
    """Remote without image to image: Vary and Upscale said plainly, Inpaint local only."""
    monkeypatch.setenv("SD_BACKEND", "remote")
    monkeypatch.setenv("SD_REMOTE_URL", "http://127.0.0.1:9/generate")
    at = app()
    assert not at.exception
    options = at.get("button_group")[0].proto.options
    assert [o.content for o in options] == ["Text to image"]
    text = _captions(at)
    assert "makes images from text only" in text
    assert "Inpaint runs on the local backend only" in text
    # SLG too: the toggle is off and says why (the remote task takes no such setting).
    assert at.toggle(key="slg_on").value is False and at.toggle(key="slg_on").proto.disabled
    assert "Skip layer guidance runs on the local pipeline only" in text
    assert at.session_state["slg"] == "off"
    monkeypatch.setenv("SD_REMOTE_IMAGE_TO_IMAGE", "true")
    at = app()
    assert [o.content for o in at.get("button_group")[0].proto.options] == [
        "Text to image",
        "Vary",
        "Upscale",
    ]


def test_a_vary_counts_against_the_daily_limit(app, monkeypatch):
    """SD_DAILY_LIMIT=2 (no sign-in: for the whole app): after one image, a Vary of two
    images is refused before the pipeline runs; a Vary of one spends the day, and Generate
    is then off."""
    monkeypatch.setenv("SD_DAILY_LIMIT", "2")
    at = _generated(app, seed=7)
    assert any("1 of 2 images left today" in c.value for c in at.caption)
    at.button(key="work_0_img2img").click().run()
    at.slider(key="num_images").set_value(2)
    at.button(key="generate").click().run()
    assert any("you have 1 left today" in e.value for e in at.error), at.error
    assert current_store().count() == 1
    at.slider(key="num_images").set_value(1)
    at.button(key="generate").click().run()
    assert not at.exception and not at.error
    assert [r.mode for r in current_store().page().records] == ["img2img", "txt2img"]
    at.run()
    assert at.button(key="generate").disabled
    assert any("Generate works again at 00:00 UTC" in w.value for w in at.warning)


def test_the_session_strip_sends_an_earlier_result_to_work_on(app):
    """Two results: each strip thumbnail has Vary / Inpaint / Upscale; Inpaint on the
    earlier one (seed 7) works on that image, read back from the Seed history."""
    at = _generated(app, seed=7)
    at.number_input(key="seed").set_value(8)
    at.button(key="generate").click().run()
    assert not at.exception and not at.error
    strip = [b.key for b in at.button if b.key and b.key.startswith("strip_")]
    inpaint = [k for k in strip if k.endswith("_inpaint")]
    assert len(inpaint) == 2 and len(strip) == 6, strip
    first = min(current_store().page().records, key=lambda r: r.created_at)
    assert first.seed == 7
    at.button(key=inpaint[-1]).click().run()  # the strip lists the newest first
    assert at.session_state["mode"] == "inpaint"
    assert "Working on 512×512: Seed 7" in _captions(at)
    source = at.session_state["work_source"]
    assert source.png == current_store().png_bytes(first.id) or source.record_id == first.id


def test_a_change_of_mode_to_nothing_keeps_the_last_mode(app):
    """The mode control answering "nothing" (a click on the chosen pill while the page
    redraws) keeps the mode drawn last instead of failing the page."""
    at = _generated(app, seed=7)
    at.button(key="work_0_img2img").click().run()
    assert at.session_state["mode"] == "img2img"
    at.get("button_group")[0].set_value(None).run()
    assert not at.exception
    assert at.session_state["mode"] == "img2img"
