"""Live preview: the x0 estimate, the projection, the throttle, and images left untouched."""

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from core.generation import GenerationRequest
from core.local import run_pipeline
from core.preview import (
    SD3_LATENT_RGB_BIAS,
    SD3_LATENT_RGB_FACTORS,
    CleanEstimate,
    StepPreview,
    latents_to_rgb,
    to_float32_array,
)
from core.settings import SettingsError, load_settings


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def test_last_estimate_equals_the_final_latents(demo_pipe):
    """On the real tiny pipeline, the estimate at the last step is the returned latents, exactly."""
    estimate, seen = CleanEstimate(), []

    def on_step(pipe, step, timestep, kwargs):
        seen.append(estimate.update(pipe.scheduler, kwargs["latents"]))
        return {}

    final = demo_pipe(
        prompt="a fox",
        num_inference_steps=4,
        width=512,
        height=512,
        output_type="latent",  # the latents the VAE would decode, in model space
        generator=_generator(3),
        callback_on_step_end=on_step,
    ).images
    assert seen[0] is None  # the first step has no previous latents to difference
    assert all(x is not None for x in seen[1:])
    assert np.array_equal(seen[-1], final[0].to(torch.float32).numpy())
    assert not np.array_equal(seen[-2], seen[-1])  # earlier estimates are real guesses


def test_estimate_recovers_the_clean_latents_when_the_velocity_is_exact():
    """With a transformer that predicts the true flow velocity, every estimate is the target.

    The one fake: the transformer's forward returns v = (x_σ − x₀)/σ for a known x₀; the
    pipeline, guidance and scheduler are the real ones.
    """
    from core.demo import build_demo_pipeline

    pipe = build_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    target = torch.randn(1, 16, 64, 64, generator=_generator(0))

    def exact_velocity(hidden_states, timestep, return_dict=False, **_):
        sigma = (timestep / 1000).view(-1, 1, 1, 1)
        return ((hidden_states - target) / sigma,)

    pipe.transformer.forward = exact_velocity
    estimate, seen, noisy = CleanEstimate(), [], []

    def on_step(pipe, step, timestep, kwargs):
        noisy.append(kwargs["latents"])
        seen.append(estimate.update(pipe.scheduler, kwargs["latents"]))
        return {}

    pipe(
        prompt="x",
        num_inference_steps=6,
        width=512,
        height=512,
        guidance_scale=4.5,
        output_type="latent",
        generator=_generator(1),
        callback_on_step_end=on_step,
    )
    errors = [float(np.abs(x - target[0].numpy()).max()) for x in seen[1:]]
    assert len(errors) == 5
    assert max(errors) < 1e-4, errors
    # The latents the callback is handed are still far from it: the estimate is what helps.
    assert float((noisy[1] - target).abs().max()) > 1


def test_preview_on_and_off_give_bit_identical_images(demo_pipe):
    """The same request with the preview on and off gives the same pixels; previews were made."""
    request = GenerationRequest(
        prompt="a lighthouse", seed=17, width=512, height=512, num_inference_steps=4, num_images=2
    )
    previews = []
    with_preview, _ = run_pipeline(
        demo_pipe,
        request,
        on_progress=lambda p: previews.append((p.image_index, p.step, p.preview)),
        preview=True,
    )
    without, _ = run_pipeline(demo_pipe, request, on_progress=lambda p: None, preview=False)
    assert [a.tobytes() for a in with_preview] == [b.tobytes() for b in without]
    made = [(i, step) for i, step, jpeg in previews if jpeg is not None]
    assert (0, 2) in made and (0, 4) in made and (1, 2) in made and (1, 4) in made
    jpeg = next(jpeg for _, _, jpeg in previews if jpeg is not None)
    image = Image.open(io.BytesIO(jpeg))
    assert (image.format, image.size) == ("JPEG", (64, 64))  # latent size: 512 / 8


def test_preview_off_adds_nothing_to_progress(demo_pipe):
    """Without the preview, progress updates carry no image."""
    seen = []
    run_pipeline(
        demo_pipe,
        GenerationRequest(seed=1, width=512, height=512, num_inference_steps=3),
        on_progress=lambda p: seen.append(p.preview),
    )
    assert seen == [None, None, None]


def test_projection_maps_latents_through_comfyui_factors():
    """Zero latents give the bias colour; one channel adds its row of factors (−1…1 → 0…255)."""
    rgb = latents_to_rgb(np.zeros((16, 2, 3), dtype=np.float32))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    expected = [round((b + 1) / 2 * 255) for b in SD3_LATENT_RGB_BIAS]
    assert rgb[0, 0].tolist() == expected
    one = np.zeros((16, 1, 1), dtype=np.float32)
    one[2] = 2.0  # channel 2 is the reddest row
    r, g, b = latents_to_rgb(one)[0, 0].tolist()
    row = SD3_LATENT_RGB_FACTORS[2]
    assert [r, g, b] == [
        round((2 * f + bias + 1) / 2 * 255)
        for f, bias in zip(row, SD3_LATENT_RGB_BIAS, strict=True)
    ]
    assert r > g > b


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_latents_convert_to_float32_exactly(dtype):
    """Any latent dtype becomes the float32 array torch itself would give, bit for bit."""
    latents = torch.randn(1, 16, 8, 8, generator=_generator(2)).to(dtype)
    array = to_float32_array(latents)
    assert array.dtype == np.float32 and array.shape == (16, 8, 8)
    assert np.array_equal(array, latents[0].to(torch.float32).numpy())


def _fake_scheduler(steps: int) -> SimpleNamespace:
    return SimpleNamespace(
        sigmas=torch.linspace(1.0, 0.0, steps + 1), step_index=0, config=SimpleNamespace()
    )


def _steps_with_preview(step_seconds: float, steps: int = 20) -> list[int]:
    now = [0.0]
    scheduler = _fake_scheduler(steps)
    previewer = StepPreview(total_steps=steps, clock=lambda: now[0])
    made = []
    for step in range(1, steps + 1):
        now[0] += step_seconds
        scheduler.step_index = step
        if previewer.update(scheduler, step, torch.randn(1, 16, 4, 4)) is not None:
            made.append(step)
    return made


def test_slow_steps_get_a_preview_every_step():
    """Steps slower than the interval get a preview each (from step 2, the first estimate)."""
    assert _steps_with_preview(1.0) == list(range(2, 21))


def test_fast_steps_get_at_most_four_previews_a_second():
    """At 0.1 s a step, previews come every third step, and the last step always gets one."""
    made = _steps_with_preview(0.1)
    assert made == [2, 5, 8, 11, 14, 17, 20]
    gaps = [b - a for a, b in zip(made, made[1:], strict=False)]
    assert min(gaps[:-1]) * 0.1 >= 0.25


def test_preview_setting_defaults_on_and_reads_false(tmp_path):
    """SD_PREVIEW is on unless set false; a bad value names the valid ones."""
    assert load_settings(environ={}, dotenv_path=tmp_path / "x").preview is True
    off = load_settings(environ={"SD_PREVIEW": "false"}, dotenv_path=tmp_path / "x")
    assert off.preview is False
    with pytest.raises(SettingsError, match="SD_PREVIEW"):
        load_settings(environ={"SD_PREVIEW": "maybe"}, dotenv_path=tmp_path / "x")
