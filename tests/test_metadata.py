"""PNG metadata: A1111 infotext written and parsed, shared links, PNG import."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from core import metadata, share
from core.form import DEFAULTS

A1111_SAMPLE = (
    "masterpiece, a castle on a hill\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 1234, "
    "Size: 768x512, Model hash: abc123, Model: sd_xl_base, Version: v1.10.1"
)


def _png(text_chunks: dict[str, str]) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text_chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_a1111_sample_gives_the_generator_fields():
    """A hand-written A1111 infotext yields prompt, negative prompt, steps, CFG, seed, size."""
    parsed = metadata.parse_parameters(A1111_SAMPLE)
    assert parsed.values == {
        "prompt": "masterpiece, a castle on a hill",
        "negative_prompt": "blurry, lowres",
        "steps": 28,
        "guidance_scale": 7.5,
        "seed": 1234,
        "randomize_seed": False,
        "width": 768,
        "height": 512,
        "mode": "txt2img",  # no image-to-image key (e.g. "Denoising strength")
        "loras": [],  # no <lora:…> tag: using these settings picks none
    }
    assert parsed.extras["Sampler"] == "DPM++ 2M"
    assert parsed.extras["Model hash"] == "abc123"
    assert parsed.extras["Version"] == "v1.10.1"


def test_quoted_values_are_unquoted():
    """JSON-quoted values (with `,` `:` or newlines) come back as the original text."""
    text = (
        "a cat\nSteps: 20, Sampler: Euler, CFG scale: 5, Seed: 9, Size: 512x512, "
        'Lora hashes: "detail: 1a2b, style: 3c4d", Note: "two\\nlines"'
    )
    parsed = metadata.parse_parameters(text)
    assert parsed.values["prompt"] == "a cat"
    assert parsed.values["negative_prompt"] == ""
    assert parsed.extras["Lora hashes"] == "detail: 1a2b, style: 3c4d"
    assert parsed.extras["Note"] == "two\nlines"


def test_multiline_prompt_without_negative():
    """A multi-line prompt with no negative prompt keeps its lines; parameters still parse."""
    text = "line one\nline two: with colon\nSteps: 30, CFG scale: 4, Seed: 77, Size: 1024x768"
    parsed = metadata.parse_parameters(text)
    assert parsed.values["prompt"] == "line one\nline two: with colon"
    assert parsed.values["negative_prompt"] == ""
    assert (parsed.values["width"], parsed.values["height"]) == (1024, 768)


def test_sdnext_extra_keys_are_kept_as_extras():
    """SD.Next's extra keys (App, Backend, Pipeline) do not disturb the known fields."""
    text = (
        "a tree\nNegative prompt: ugly\nSteps: 20, Seed: 3, Sampler: Default, CFG scale: 6, "
        "Size: 1024x1024, App: SD.Next, Backend: Diffusers, Pipeline: StableDiffusion3Pipeline"
    )
    parsed = metadata.parse_parameters(text)
    assert parsed.values["seed"] == 3 and parsed.values["guidance_scale"] == 6.0
    assert parsed.extras["App"] == "SD.Next"
    assert parsed.extras["Pipeline"] == "StableDiffusion3Pipeline"


def test_fooocus_json_parameters():
    """Fooocus's JSON scheme is read too (resolution as "(w, h)", seed as text)."""
    text = (
        '{"prompt": "a fox", "negative_prompt": "", "resolution": "(896, 1152)", '
        '"guidance_scale": 4, "steps": 30, "seed": "5550123", "sampler": "dpmpp_2m_sde_gpu"}'
    )
    parsed = metadata.parse_parameters(text)
    assert parsed.values["prompt"] == "a fox"
    assert parsed.values["seed"] == 5550123
    assert (parsed.values["width"], parsed.values["height"]) == (896, 1152)
    assert parsed.extras["sampler"] == "dpmpp_2m_sde_gpu"


def test_build_then_parse_round_trips_awkward_prompts():
    """Our infotext of prompts with commas, colons and newlines parses back to the same."""
    prompt = 'a "quoted", odd: prompt\nsecond line'
    text = metadata.build_infotext(
        prompt=prompt,
        negative_prompt="bad, worse",
        steps=40,
        sampler="FlowMatchEulerDiscreteScheduler",
        guidance_scale=4.5,
        seed=2_147_483_647,
        width=1440,
        height=512,
        model="stabilityai/stable-diffusion-3.5-medium",
        extra={"Model revision": "local:abc, def"},
    )
    parsed = metadata.parse_parameters(text)
    assert parsed.values["prompt"] == prompt
    assert parsed.values["negative_prompt"] == "bad, worse"
    assert parsed.values["seed"] == 2_147_483_647
    assert parsed.values["guidance_scale"] == 4.5
    assert parsed.extras["Model"] == "stabilityai/stable-diffusion-3.5-medium"
    assert parsed.extras["Model revision"] == "local:abc, def"
    assert set(parsed.values) <= set(DEFAULTS)


def test_png_without_parameters_is_explained():
    """A PNG with no `parameters` chunk raises a message saying so."""
    with pytest.raises(metadata.MetadataError, match="no generation settings"):
        metadata.parameters_from_png(_png({"Software": "paint"}))


def test_non_png_is_explained():
    """A JPEG upload is refused with a message naming PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    with pytest.raises(metadata.MetadataError, match="not a PNG"):
        metadata.parameters_from_png(buffer.getvalue())


def test_huge_file_is_refused_before_decoding():
    """A file over the size limit is refused with the limit in the message."""
    data = metadata.PNG_SIGNATURE + b"\0" * metadata.MAX_IMPORT_BYTES
    with pytest.raises(metadata.MetadataError, match="limit is 20 MB"):
        metadata.parameters_from_png(data)


def test_png_parameters_chunk_is_read():
    """The `parameters` chunk of a real PNG is parsed, non-Latin-1 text included."""
    parsed = metadata.parameters_from_png(
        _png({"parameters": "ein Bär 🐻\nSteps: 12, CFG scale: 3, Seed: 5, Size: 512x512"})
    )
    assert parsed.values["prompt"] == "ein Bär 🐻"
    assert parsed.values["steps"] == 12


def test_check_values_drops_out_of_range_with_the_range_named():
    """Out-of-range values are dropped with a warning naming the range; the rest apply."""
    values, warnings = share.check_values(
        {"steps": "150", "width": "1000", "seed": "12", "guidance_scale": "abc", "prompt": "x"}
    )
    assert values == {"seed": 12, "prompt": "x", "randomize_seed": False}
    text = " ".join(warnings)
    assert "1–100" in text
    assert "multiple of 16" in text and "992 or 1008" in text
    assert "0–20" in text


def test_query_params_round_trip():
    """A share link's query string parsed back gives the same generator values."""
    from urllib.parse import parse_qs, urlsplit

    values = {
        "prompt": "a <b>bold</b> & odd # prompt",
        "negative_prompt": "",
        "seed": 99,
        "width": 768,
        "height": 1024,
        "guidance_scale": 3.5,
        "steps": 20,
        "num_images": 2,
    }
    link = share.share_link(values, "http://localhost:8501/")
    assert link.startswith("http://localhost:8501/?")
    params = {k: v for k, v in parse_qs(urlsplit(link).query).items()}
    parsed, warnings = share.from_query(params)
    assert warnings == []
    assert parsed == {**{k: v for k, v in values.items() if v != ""}, "randomize_seed": False}


def test_png_from_a_local_folder_model_names_the_folder_not_its_path(demo_dir, tmp_path):
    """SD_MODEL=/some/server/folder: the PNG anyone downloads says the folder's name and the
    revision hash, and holds no server path in any text chunk (nor the record)."""
    from core.generation import GenerationRequest
    from core.history import keep_result
    from core.local import LocalBackend

    backend = LocalBackend(model=str(demo_dir), device="cpu", dtype="float32")
    request = GenerationRequest(
        prompt="a fox", seed=3, width=512, height=512, num_inference_steps=2
    )
    result = backend.generate(request)
    kept = keep_result(result, backend=backend, target=tmp_path / "data", session_id="s")
    assert kept.error is None
    (png,) = kept.pngs
    chunks = Image.open(io.BytesIO(png)).text
    assert chunks, "the PNG carries its settings"
    text = "\n".join(chunks.values())
    parent = str(demo_dir.parent)
    assert parent not in text and str(demo_dir.resolve().parent) not in text, chunks
    assert f"Model: {demo_dir.name}," in chunks["parameters"]
    assert 'Model revision: "local:' in chunks["parameters"]
    (record,) = kept.records
    assert record.model == demo_dir.name
