"""Vary, Inpaint, Upscale and skip-layer guidance as requests (issue 18), on the real tiny
pipeline through the local backend: each repeats bit for bit, Inpaint keeps every pixel
outside the blurred mask, records keep their source and mask on both engines, verify
remakes each exactly, and a record's stored inputs are checked like any stored bytes."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core import history, metadata, share
from core.generation import GenerationError, GenerationRequest, InvalidRequest
from core.local import LocalBackend
from core.masks import blur_mask
from core.modes.shared import steps_that_run
from core.sources import from_image, from_png
from tests.conftest import current_store

SLG_ALL_STEPS = "layers 1; scale 2.8; start 0; stop 1"  # a window that holds 2-step runs
BASE = {"prompt": "a red fox", "family": "demo", "num_inference_steps": 2, "seed": 5}


@pytest.fixture(name="backend", scope="module")
def fixture_backend():
    """One local backend on the demo model, float32, for the module."""
    backend = LocalBackend(model="demo", device="cpu", dtype="float32")
    backend.ensure_loaded()
    return backend


@pytest.fixture(name="made", scope="module")
def fixture_made(backend):
    """A text-to-image result to work on (512², 2 steps)."""
    request = GenerationRequest(**BASE, width=512, height=512)
    return backend.generate(request).images[0]


def _mask(size=(512, 512), box=(160, 160, 320, 288)) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def _pixels(image) -> bytes:
    return image.convert("RGB").tobytes()


def _request(mode, source, **changes) -> GenerationRequest:
    return GenerationRequest(**{**BASE, "mode": mode, "source": source, **changes})


# --- the requests --------------------------------------------------------------------------------
def test_image_modes_take_their_size_from_the_source_and_count_the_steps_that_run(made):
    """Vary and Inpaint make the source's size, Upscale ×1.25 of it; steps are diffusers'."""
    source = from_image(made.resize((512, 640)))
    vary = _request("img2img", source, num_inference_steps=40)
    assert (vary.width, vary.height, vary.effective_steps) == (512, 640, 24)  # 40 × 0.6
    upscale = _request("upscale", source, num_inference_steps=10)
    assert (upscale.width, upscale.height) == (640, 800)
    assert upscale.effective_steps == steps_that_run(10, 0.35) == 4  # not int(3.5)
    inpaint = _request("inpaint", source, mask=from_image(_mask((512, 640))))
    assert inpaint.mode_options == {"strength": 0.75, "mask_blur": 4, "slg": "off"}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"mode": "img2img", "source": None}, "source", "Vary needs an image"),
        ({"mode": "inpaint"}, "mask", "Inpaint needs a painted mask"),
        ({"mode": "txt2img"}, "source", "Text to image takes no source"),
        ({"mode": "img2img", "width": 768}, "width", "makes a 512×512 image"),
        ({"mode": "img2img", "mode_options": {"strength": 0.01}}, "strength", "0.05–1"),
        ({"mode_options": {"slg": "layers 7; scale 2.8; start 0.01; stop 0.2"}}, "slg", "2 layers"),
        ({"mode_options": {"slg": "sometimes"}}, "slg", "must be off or like"),
    ],
)
def test_requests_that_cannot_run_are_refused_naming_the_fix(made, changes, field, words):
    """A missing image, a wrong size, a strength or SLG layer out of range: refused early."""
    values = {**BASE, "mode": "img2img", "source": from_image(made), **changes}
    with pytest.raises(InvalidRequest, match=words) as info:
        GenerationRequest(**values)
    assert info.value.field == field


def test_a_mask_of_another_size_and_an_upscale_past_the_largest_are_refused(made):
    """The mask must match the source; an image at 1440 px has nothing to upscale to."""
    with pytest.raises(InvalidRequest, match="mask is 512×640 and the image 512×512"):
        _request("inpaint", from_image(made), mask=from_image(_mask((512, 640))))
    big = from_image(Image.new("RGB", (1440, 1440)))
    with pytest.raises(InvalidRequest, match="already at this model's largest size"):
        _request("upscale", big)


# --- running them --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["img2img", "upscale"])
def test_vary_and_upscale_repeat_bit_for_bit_and_report_the_steps_that_run(backend, made, mode):
    """Same seed, same pixels; progress counts the strength's steps, then decodes."""
    request = _request(mode, from_image(made), mode_options={"strength": 1.0})
    seen = []
    first = backend.generate(request, on_progress=seen.append).images[0]
    again = backend.generate(request).images[0]
    assert _pixels(first) == _pixels(again)
    assert first.size == (request.width, request.height)
    steps = [(p.step, p.total_steps) for p in seen if p.phase == "denoising"]
    assert steps == [(1, 2), (2, 2)] and seen[-1].phase == "decoding"
    assert _pixels(first) != _pixels(made.resize(first.size))


def test_inpaint_keeps_every_pixel_outside_the_blurred_mask(backend, made):
    """The paste-back: outside the blurred mask, the source's pixels exactly; inside, new."""
    mask = _mask()
    request = _request("inpaint", from_image(made), mask=from_image(mask))
    result = backend.generate(request).images[0]
    assert _pixels(result) == _pixels(backend.generate(request).images[0])
    blurred = np.asarray(blur_mask(mask, 4))
    out, src = np.asarray(result), np.asarray(made)
    assert (out[blurred == 0] == src[blurred == 0]).all()
    assert (out[blurred == 255] != src[blurred == 255]).any()


@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_slg_changes_every_mode_and_repeats(backend, made, mode):
    """Skip-layer guidance on the demo's layer 1: other pixels than without, the same twice."""
    extra = {"mask": from_image(_mask())} if mode == "inpaint" else {}
    source = from_image(made) if mode != "txt2img" else None
    strength = {"strength": 1.0} if mode != "txt2img" else {}
    without = GenerationRequest(
        **BASE, mode=mode, source=source, mode_options=strength, width=512, height=512, **extra
    )
    with_slg = dataclasses.replace(without, mode_options={**strength, "slg": SLG_ALL_STEPS})
    plain = backend.generate(without).images[0]
    guided = backend.generate(with_slg).images[0]
    assert _pixels(plain) != _pixels(guided)
    assert _pixels(guided) == _pixels(backend.generate(with_slg).images[0])


def test_text_to_image_slg_is_diffusers_own(backend):
    """Text to image passes diffusers' native SLG arguments: the app's pixels are a raw call's."""
    import torch

    request = GenerationRequest(**BASE, width=512, height=512, mode_options={"slg": SLG_ALL_STEPS})
    app = backend.generate(request).images[0]
    pipe = backend.loaded.pipe
    raw = pipe(
        prompt=request.prompt,
        width=512,
        height=512,
        num_inference_steps=2,
        guidance_scale=request.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(request.seed),
        skip_guidance_layers=[1],
        skip_layer_guidance_start=0.0,
        skip_layer_guidance_stop=1.0,
    ).images[0]
    assert _pixels(app) == _pixels(raw)


@pytest.fixture(name="roomy_demo")
def fixture_roomy_demo():
    """The demo family declaring 24 layers (its transformer has 2), for one test."""
    from core import models

    index = models.FAMILIES.index(models.DEMO)
    models.FAMILIES[index] = dataclasses.replace(models.DEMO, transformer_layers=24)
    yield
    models.FAMILIES[index] = models.DEMO


def test_slg_layers_the_loaded_transformer_lacks_are_refused(backend, roomy_demo):
    """A model whose transformer has fewer layers than its family's rules: said, not skipped."""
    slg = "layers 7; scale 2.8; start 0; stop 1"
    request = GenerationRequest(**BASE, width=512, height=512, mode_options={"slg": slg})
    with pytest.raises(GenerationError, match="has 2 layers"):
        backend.generate(request)


# --- records -------------------------------------------------------------------------------------
def _kept(backend, request):
    result = backend.generate(request)
    kept = history.keep_result(result, backend=backend, target=_settings(), session_id="s")
    assert kept.error is None, kept.error
    return kept.records[0], kept.pngs[0]


def _settings():
    from core.settings import load_settings

    return load_settings()


def test_every_mode_is_a_record_that_verifies_bit_for_bit(engine, backend, made):
    """On both engines: a record of each mode keeps its source (a record by reference, an
    upload by its bytes) and mask, writes A1111's keys, and Regenerate & verify is identical."""
    base, _ = _kept(backend, GenerationRequest(**BASE, width=512, height=512))
    store = current_store()
    as_record = history.record_source(store, base)
    upload = from_image(made.transpose(Image.Transpose.FLIP_LEFT_RIGHT), note="Upload")
    cases = {
        "img2img": _request("img2img", as_record, mode_options={"slg": SLG_ALL_STEPS}),
        "upscale": _request("upscale", as_record, mode_options={"factor": "1.4"}),
        "inpaint": _request("inpaint", upload, mask=from_image(_mask())),
    }
    words = {
        "img2img": ("Denoising strength: 0.6", "Skip layer guidance: " + "layers 1; scale 2.8"),
        "upscale": ("Denoising strength: 0.35", "Hires upscale: 1.4"),
        "inpaint": ("Denoising strength: 0.75", "Mask blur: 4"),
    }
    for mode, request in cases.items():
        record, png = _kept(backend, request)
        stored = store.get(record.id)
        assert stored == record and stored.problems() == []
        if mode == "inpaint":
            assert (stored.source_record, stored.source_sha256) == ("", upload.sha256)
            assert stored.mask_sha256 == request.mask.sha256
            assert store.input_png(upload.sha256) == upload.png
        else:
            assert (stored.source_record, stored.source_sha256) == (base.id, "")
        parameters = Image.open(io.BytesIO(png)).info["parameters"]
        assert all(word in parameters for word in words[mode]), parameters
        assert history.verify(store, stored, backend).identical, mode


def test_an_uploaded_source_is_kept_once_for_many_records(backend, made):
    """The same upload behind two Varies is one kept file, named by its SHA-256."""
    upload = from_image(made)
    first, _ = _kept(backend, _request("img2img", upload))
    second, _ = _kept(backend, _request("img2img", upload, seed=6))
    store = current_store()
    assert first.source_sha256 == second.source_sha256 == upload.sha256
    kept = list((store.root / "inputs").rglob("*.png"))
    assert [p.name for p in kept] == [f"{upload.sha256}.png"]


def test_a_record_whose_inputs_were_edited_or_removed_is_not_regenerated(backend, made):
    """Stored inputs are outside input: bytes that no longer hash to their name, a missing
    source record, or a source image that is not its record's pixels: nothing runs."""
    upload = from_image(made)
    record, _ = _kept(backend, _request("img2img", upload))
    store = current_store()
    store.storage.input_path(upload.sha256).write_bytes(from_image(_mask()).png)
    with pytest.raises(GenerationError, match="not the bytes it was saved as"):
        history.verify(store, record, backend)
    gone = dataclasses.replace(record, source_sha256="", source_record="0" * 32)
    with pytest.raises(history.InputsMissing, match="no longer in the history"):
        history.record_inputs(store, gone)
    base, _ = _kept(backend, GenerationRequest(**BASE, width=512, height=512))
    store.storage.image_path(base.id).write_bytes(from_image(_mask().convert("RGB")).png)
    with pytest.raises(history.InputsMissing, match="no longer match the record"):
        history.record_source(store, base)
    bomb = dataclasses.replace(record, source_sha256="f" * 64)
    with pytest.raises(history.InputsMissing, match="missing from the history"):
        history.record_inputs(store, bomb)


def test_stored_names_of_inputs_are_checked_like_every_column():
    """A record naming no source for Vary, a path for a hash, or a mask for text to image."""
    request = GenerationRequest(**BASE, width=512, height=512)
    record = history.new_record(request, seed=5, facts={}, session_id="s", duration_seconds=1)
    vary = dataclasses.replace(record, mode="img2img", mode_options='{"strength":0.6}')
    assert "this img2img record names no source image" in vary.problems()
    hostile = dataclasses.replace(vary, source_sha256="../../etc/passwd")
    assert any("is not a SHA-256" in p for p in hostile.stored_problems())
    stray = dataclasses.replace(record, mask_sha256="a" * 64)
    assert stray.problems() == ["a txt2img record names no source or mask images"]


# --- metadata, links -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "mode", "values"),
    [
        ("Denoising strength: 0.6", "img2img", {"strength": 0.6}),
        ("Denoising strength: 0.75, Mask blur: 8", "inpaint", {"mask_blur": 8}),
        ("Denoising strength: 0.35, Hires upscale: 1.4", "upscale", {"factor": "1.4"}),
        (
            f"Skip layer guidance: {SLG_ALL_STEPS}",
            "txt2img",
            {"slg": "layers 1; scale 2.8; start 0; stop 1"},
        ),
    ],
)
def test_an_a1111_infotext_tells_the_mode_and_its_values(text, mode, values):
    """Import reads A1111's keys back: the mode they mark and its options."""
    parsed = metadata.parse_parameters(f"a fox\nSteps: 20, Seed: 3, Size: 512x512, {text}")
    assert parsed.values["mode"] == mode
    assert values.items() <= parsed.values.items()
    checked, warnings = share.check_values(parsed.values)
    assert warnings == [] and checked["mode"] == mode


def test_a_link_carries_a_source_record_id_never_bytes():
    """`source=` holds a record id; anything else is named and dropped."""
    link = share.query_string(
        {"prompt": "x", "mode": "img2img", "strength": 0.5, "source": "abc123"}
    )
    assert "source=abc123" in link and "mode=img2img" in link
    values, warnings = share.from_query({"mode": "img2img", "source": "../../x"})
    assert "source" not in values and "not a record id" in warnings[0]
    assert "source" not in share.from_query({"source": "abc123"})[0]  # not for text to image


def test_only_a_record_the_visitor_may_see_opens_as_a_source(backend):
    """Live records: anyone let in; deleted ones: admins only; unknown ids: nothing."""
    from core.auth import Visitor

    record, _ = _kept(backend, GenerationRequest(**BASE, width=512, height=512))
    store = current_store()
    someone = Visitor(id="ann@example.com", name="Ann", is_admin=False)
    admin = Visitor(id="root@example.com", name="Root", is_admin=True)
    assert history.visible_record(store, record.id, someone) == record
    store.delete(record.id, actor=admin.id, admin=True)
    assert history.visible_record(store, record.id, someone) is None
    assert history.visible_record(store, record.id, admin) is not None
    assert history.visible_record(store, "0" * 32, admin) is None


def test_a_source_from_png_bytes_is_checked_from_its_header():
    """A bomb or a non-PNG is refused before any pixel is decoded."""
    from core.sources import InputError
    from testkit.hostile import bomb_png, jpeg_bytes

    with pytest.raises(InputError, match="too large to decode"):
        from_png(bomb_png(20_000, text=None))
    with pytest.raises(InputError, match="not a PNG"):
        from_png(jpeg_bytes())
