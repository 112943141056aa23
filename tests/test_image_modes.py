"""Vary, inpaint, upscale and skip-layer guidance on the real tiny SD3 pipeline (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core import image_modes, masks
from core.image_modes import (
    ModeError,
    mode_pipeline,
    prompt_embeddings,
    run_image_mode,
    steps_that_run,
)
from core.prompt_cache import PromptCache
from core.slg import SkipLayerGuidance, SkipLayerGuidedTransformer, SLGError
from core.upscale import UpscaleError, run_upscale, upscale_size

SIZE = 64  # the tiny pipeline's smallest comfortable size: steps take milliseconds
TINY_SLG = SkipLayerGuidance(layers=(1,), stop=0.5)  # the demo transformer has 2 layers


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


@pytest.fixture(name="source", scope="module")
def fixture_source() -> Image.Image:
    noisy = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return Image.fromarray(noisy)


@pytest.fixture(name="embeds", scope="module")
def fixture_embeds(demo_pipe):
    return prompt_embeddings(demo_pipe, prompt="a fox", negative_prompt="blur", guidance_scale=4.5)


@pytest.fixture(name="stroke", scope="module")
def fixture_stroke() -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (24, 8, 40, 56))
    return mask


def run(pipe, embeds, source, **options):
    settings = {"seed": 3, "steps": 6, "guidance_scale": 4.5, "strength": 0.6}
    return run_image_mode(pipe, embeds=embeds, image=source, **{**settings, **options})


# --- pipelines from the loaded one -----------------------------------------------------------
@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_mode_pipeline_shares_every_module_and_tensor(demo_pipe, mode):
    built = mode_pipeline(demo_pipe, mode)
    assert type(built).__name__ == image_modes.SD3_PIPELINES[mode]
    for name, component in demo_pipe.components.items():
        if name != "scheduler":
            assert built.components[name] is component, name
    base = {n: p.data_ptr() for n, p in demo_pipe.transformer.named_parameters()}
    assert {n: p.data_ptr() for n, p in built.transformer.named_parameters()} == base
    assert built.scheduler is not demo_pipe.scheduler  # per call: its step counter is its own


def test_mode_pipeline_keeps_a_bfloat16_pipeline_in_bfloat16():
    from diffusers import StableDiffusion3Img2ImgPipeline

    from core.demo import build_demo_pipeline

    pipe = build_demo_pipeline().to(dtype=torch.bfloat16)
    pointer = pipe.transformer.pos_embed.proj.weight.data_ptr()
    mode_pipeline(pipe, "img2img")
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.transformer.pos_embed.proj.weight.data_ptr() == pointer
    # What the dtype argument avoids: diffusers' default casts the shared modules in place.
    StableDiffusion3Img2ImgPipeline.from_pipe(pipe)
    assert pipe.transformer.dtype == torch.float32


@pytest.mark.parametrize(
    ("steps", "strength", "expected"),
    [(40, 0.6, 24), (40, 1.0, 40), (10, 0.35, 4), (40, 0.05, 2), (20, 0.5, 10), (1, 0.05, 1)],
)
def test_steps_that_run_follow_diffusers(demo_pipe, steps, strength, expected):
    assert steps_that_run(steps, strength) == expected
    built = mode_pipeline(demo_pipe, "img2img")
    built.scheduler.set_timesteps(steps)
    assert len(built.get_timesteps(steps, strength, "cpu")[0]) == expected


@pytest.mark.parametrize("strength", [0.0, 0.04, 1.01, float("nan"), True])
def test_strength_out_of_range_is_refused(demo_pipe, embeds, source, strength):
    with pytest.raises(ModeError, match="0.05–1"):
        run(demo_pipe, embeds, source, mode="img2img", strength=strength)


# --- image-to-image ------------------------------------------------------------------------
def test_img2img_repeats_bit_for_bit_and_reports_the_steps_that_run(demo_pipe, embeds, source):
    seen = []
    first = run(demo_pipe, embeds, source, mode="img2img", on_step=lambda k, n: seen.append((k, n)))
    again = run(demo_pipe, embeds, source, mode="img2img")
    assert np.array_equal(pixels(first.image), pixels(again.image))
    assert first.steps_run == 4 and seen == [(k, 4) for k in range(1, 5)]
    other_seed = run(demo_pipe, embeds, source, mode="img2img", seed=4)
    assert not np.array_equal(pixels(first.image), pixels(other_seed.image))


def test_img2img_from_embeddings_equals_img2img_from_the_prompt(demo_pipe, embeds, source):
    ours = run(demo_pipe, embeds, source, mode="img2img")
    direct = mode_pipeline(demo_pipe, "img2img")(
        prompt="a fox",
        negative_prompt="blur",
        image=source,
        width=SIZE,
        height=SIZE,
        strength=0.6,
        num_inference_steps=6,
        guidance_scale=4.5,
        generator=torch.Generator("cpu").manual_seed(3),
    )
    assert np.array_equal(pixels(ours.image), pixels(direct.images[0]))


def test_prompt_embeddings_are_shared_with_text_to_image_through_the_cache(demo_pipe):
    cache = PromptCache()
    first = prompt_embeddings(demo_pipe, prompt="x", guidance_scale=4.5, cache=cache)
    second = prompt_embeddings(demo_pipe, prompt="x", guidance_scale=4.5, cache=cache)
    assert first is second and (cache.hits, cache.misses) == (1, 1)


def test_a_step_callback_exception_stops_the_call(demo_pipe, embeds, source):
    class StopRunError(Exception):
        pass

    def stop(step, total):
        if step == 2:
            raise StopRunError

    with pytest.raises(StopRunError):
        run(demo_pipe, embeds, source, mode="img2img", on_step=stop)


def test_img2img_works_on_a_pipeline_loaded_with_from_pretrained(demo_dir, source):
    from diffusers import StableDiffusion3Pipeline

    loaded = StableDiffusion3Pipeline.from_pretrained(demo_dir, local_files_only=True)
    loaded.set_progress_bar_config(disable=True)
    embeds = prompt_embeddings(loaded, prompt="a fox", negative_prompt="blur", guidance_scale=4.5)
    from core.demo import build_demo_pipeline

    memory = build_demo_pipeline()
    memory_embeds = prompt_embeddings(
        memory, prompt="a fox", negative_prompt="blur", guidance_scale=4.5
    )
    a = run(loaded, embeds, source, mode="inpaint", mask=Image.new("L", (SIZE, SIZE), 255))
    b = run(memory, memory_embeds, source, mode="inpaint", mask=Image.new("L", (SIZE, SIZE), 255))
    assert np.array_equal(pixels(a.image), pixels(b.image))


# --- inpaint ---------------------------------------------------------------------------------
def test_inpaint_repeats_bit_for_bit(demo_pipe, embeds, source, stroke):
    first = run(demo_pipe, embeds, source, mode="inpaint", mask=stroke)
    again = run(demo_pipe, embeds, source, mode="inpaint", mask=stroke)
    assert np.array_equal(pixels(first.image), pixels(again.image))
    assert first.steps_run == 4


def test_inpaint_keeps_every_pixel_outside_the_blurred_mask_bit_for_bit(
    demo_pipe, embeds, source, stroke
):
    result = run(demo_pipe, embeds, source, mode="inpaint", mask=stroke, mask_blur=4)
    outside = np.asarray(result.blurred_mask) == 0
    inside = np.asarray(masks.overlay_mask(result.blurred_mask)) == 255
    assert outside.sum() > 1000 and inside.sum() > 500
    out, src, gen = pixels(result.image), pixels(source), pixels(result.generated)
    assert np.array_equal(out[outside], src[outside])
    assert np.array_equal(out[inside], gen[inside])
    assert not np.array_equal(out[inside], src[inside])  # something was repainted
    assert not np.array_equal(gen[outside], src[outside])  # the paste-back is what kept it


def test_inpaint_decodes_with_the_vae_shift_like_img2img(demo_pipe, embeds, source):
    """A full mask repaints everything, so inpaint must equal img2img pixel for pixel; it
    does only with the VAE's shift_factor added at decode (diffusers 0.42.1 drops it)."""
    full = Image.new("L", (SIZE, SIZE), 255)
    inpainted = run(demo_pipe, embeds, source, mode="inpaint", mask=full, mask_blur=0)
    varied = run(demo_pipe, embeds, source, mode="img2img")
    assert np.array_equal(pixels(inpainted.image), pixels(varied.image))
    diffusers_decode = mode_pipeline(demo_pipe, "inpaint")(
        **embeds,
        image=source,
        mask_image=full,
        width=SIZE,
        height=SIZE,
        strength=0.6,
        num_inference_steps=6,
        guidance_scale=4.5,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    assert not np.array_equal(pixels(diffusers_decode), pixels(varied.image))


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (None, "needs a mask"),
        (Image.new("L", (SIZE, SIZE), 0), "empty"),
        (Image.new("L", (8, 8)), "same size"),
    ],
    ids=["none", "empty", "size"],
)
def test_inpaint_without_a_usable_mask_is_refused(demo_pipe, embeds, source, mask, message):
    with pytest.raises(ModeError, match=message):
        run(demo_pipe, embeds, source, mode="inpaint", mask=mask)


# --- skip layer guidance -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_slg_stand_in_equals_diffusers_native_slg_bit_for_bit(dtype):
    from core.demo import build_demo_pipeline

    pipe = build_demo_pipeline().to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    embeds = prompt_embeddings(pipe, prompt="a fox", negative_prompt="blur", guidance_scale=4.5)
    call = {
        **embeds,
        "guidance_scale": 4.5,
        "num_inference_steps": 6,
        "width": SIZE,
        "height": SIZE,
    }

    def generator():
        return torch.Generator("cpu").manual_seed(5)

    with torch.inference_mode():
        native = pipe(**call, **TINY_SLG.pipeline_kwargs(), generator=generator()).images[0]
        off = pipe(**call, generator=generator()).images[0]
        guide = SkipLayerGuidedTransformer(
            pipe.transformer, TINY_SLG, guidance_scale=4.5, steps_run=6
        )
        ours = mode_pipeline(pipe, "txt2img", guide=guide)(**call, generator=generator()).images[0]
    assert guide.slg_steps == len(TINY_SLG.step_indices(6)) == 2
    assert np.array_equal(pixels(ours), pixels(native))
    assert not np.array_equal(pixels(native), pixels(off))


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_slg_changes_img2img_and_inpaint_and_repeats(demo_pipe, embeds, source, stroke, mode):
    mask = stroke if mode == "inpaint" else None
    off = run(demo_pipe, embeds, source, mode=mode, mask=mask)
    on = run(demo_pipe, embeds, source, mode=mode, mask=mask, slg=TINY_SLG)
    again = run(demo_pipe, embeds, source, mode=mode, mask=mask, slg=TINY_SLG)
    assert on.slg_steps == len(TINY_SLG.step_indices(4)) == 1 and off.slg_steps == 0
    assert not np.array_equal(pixels(on.image), pixels(off.image))
    assert np.array_equal(pixels(on.image), pixels(again.image))


def test_slg_does_not_run_with_guidance_off(demo_pipe, source):
    embeds = prompt_embeddings(demo_pipe, prompt="a fox", guidance_scale=1.0)
    on = run(demo_pipe, embeds, source, mode="img2img", guidance_scale=1.0, slg=TINY_SLG)
    off = run(demo_pipe, embeds, source, mode="img2img", guidance_scale=1.0)
    assert on.slg_steps == 0 and np.array_equal(pixels(on.image), pixels(off.image))


def test_slg_layers_7_8_9_on_a_transformer_that_has_them(source):
    """The demo transformer has 2 layers; one with 10 runs Medium's default layers."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    from core.demo import build_demo_pipeline

    base = build_demo_pipeline()
    torch.manual_seed(0)
    config = {**base.transformer.config, "num_layers": 10}
    deeper = SD3Transformer2DModel.from_config(config).eval()
    pipe = StableDiffusion3Pipeline(**{**base.components, "transformer": deeper})
    pipe.set_progress_bar_config(disable=True)
    embeds = prompt_embeddings(pipe, prompt="a fox", guidance_scale=4.5)
    slg = SkipLayerGuidance(stop=0.5)  # layers 7, 8, 9
    off = run(pipe, embeds, source, mode="img2img")
    on = run(pipe, embeds, source, mode="img2img", slg=slg)
    assert on.slg_steps == 1 and not np.array_equal(pixels(on.image), pixels(off.image))
    with pytest.raises(SLGError, match="has 2 layers"):
        run(base, embeds, source, mode="img2img", slg=slg)


@pytest.mark.parametrize(
    "values",
    [{"layers": ()}, {"layers": (7, 7)}, {"layers": (-1,)}, {"scale": -1}, {"start": 0.3}],
    ids=["no-layers", "repeated", "negative", "scale", "start-after-stop"],
)
def test_slg_values_out_of_range_are_refused(values):
    with pytest.raises(SLGError):
        SkipLayerGuidance(**values)


def test_slg_infotext_round_trips_without_quoting():
    slg = SkipLayerGuidance()
    assert slg.infotext() == "layers 7 8 9; scale 2.8; start 0.01; stop 0.2"
    assert "," not in slg.infotext() and ":" not in slg.infotext()
    assert SkipLayerGuidance.from_infotext(slg.infotext()) == slg
    with pytest.raises(SLGError):
        SkipLayerGuidance.from_infotext("layers x")


# --- upscale -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "factor", "expected"),
    [
        ((1024, 1024), 1.25, (1280, 1280)),
        ((1024, 768), 1.4, (1440, 1072)),
        ((512, 512), 1.4, (720, 720)),
    ],
)
def test_upscale_size_is_capped_and_snapped(size, factor, expected):
    assert upscale_size(*size, factor, max_side=1440, multiple=16) == expected


def test_upscale_at_the_maximum_or_by_another_factor_is_refused():
    with pytest.raises(UpscaleError, match="already at this model's largest size"):
        upscale_size(1440, 1440, 1.25, max_side=1440, multiple=16)
    with pytest.raises(UpscaleError, match="1.25 or 1.4"):
        upscale_size(512, 512, 2.0, max_side=1440, multiple=16)
    assert upscale_size(1024, 1024, 1.4, max_side=1440, multiple=16, max_pixels=2_000_000) == (
        1408,
        1408,
    )


def test_upscale_resizes_then_refines_with_the_same_seed(demo_pipe, embeds, source):
    options = {"factor": 1.25, "embeds": embeds, "seed": 3, "steps": 6, "guidance_scale": 4.5}
    up = run_upscale(demo_pipe, image=source, max_side=1440, multiple=16, **options)
    again = run_upscale(demo_pipe, image=source, max_side=1440, multiple=16, **options)
    assert up.result.image.size == (80, 80) and up.result.steps_run == 3  # 6 - int(6 - 2.1)
    assert np.array_equal(pixels(up.result.image), pixels(again.result.image))
    direct = run(demo_pipe, embeds, up.resized, mode="img2img", strength=0.35)
    assert np.array_equal(pixels(up.result.image), pixels(direct.image))
    assert up.note.startswith("Upscaled 64×64 → 80×80 (×1.25 asked; Lanczos")
