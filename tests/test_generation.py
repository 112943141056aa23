"""The generation request: ranges, messages that name the fix, seeds, presets."""

import math
import random

import pytest

from core import form
from core.generation import (
    MAX_IMAGE_SIZE,
    MAX_SEED,
    GenerationRequest,
    InvalidRequest,
    Progress,
    nearest_valid_sizes,
    random_seed,
)


def test_constants_match_the_plan():
    """The seed and size limits are the plan's: 2**31 - 1 and 1440 px."""
    assert MAX_SEED == 2_147_483_647
    assert MAX_IMAGE_SIZE == 1440


def test_defaults_are_the_plans():
    """A bare request is 1024×1024, guidance 4.5, 40 steps, one image, empty prompt allowed."""
    request = GenerationRequest()
    assert (request.width, request.height) == (1024, 1024)
    assert request.guidance_scale == 4.5
    assert request.num_inference_steps == 40
    assert request.num_images == 1
    assert request.pipeline_kwargs()["prompt"] == ""


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"width": 1000}, "width", "Nearest valid: 992 or 1008"),
        ({"height": 500}, "height", "512–1440"),
        ({"width": 1456}, "width", "512–1440"),
        ({"num_inference_steps": 0}, "num_inference_steps", "1–100"),
        ({"num_inference_steps": 101}, "num_inference_steps", "1–100"),
        ({"guidance_scale": math.nan}, "guidance_scale", "0–20"),
        ({"guidance_scale": math.inf}, "guidance_scale", "0–20"),
        ({"guidance_scale": -0.5}, "guidance_scale", "0–20"),
        ({"seed": -1}, "seed", f"0–{MAX_SEED}"),
        ({"seed": MAX_SEED + 1}, "seed", f"0–{MAX_SEED}"),
        ({"num_images": 5}, "num_images", "1–4"),
        ({"width": 1024.5}, "width", "whole number"),
    ],
)
def test_out_of_range_values_name_the_valid_range(changes, field, fragment):
    """Each bad field raises InvalidRequest naming the field and what would be valid."""
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest(**changes)
    assert info.value.field == field
    assert fragment in str(info.value)


def test_nearest_valid_sizes_brackets_the_value():
    """The suggestion for a size lists the multiples of 16 around it, inside the range."""
    assert nearest_valid_sizes(1000) == (992, 1008)
    assert nearest_valid_sizes(1450) == (1440,)
    assert nearest_valid_sizes(300) == (512,)


def test_batch_seeds_count_up_from_the_seed_and_wrap():
    """A batch of N uses seeds s, s+1, …; past MAX_SEED they wrap to 0."""
    assert GenerationRequest(seed=10, num_images=3).seeds == (10, 11, 12)
    assert GenerationRequest(seed=MAX_SEED, num_images=2).seeds == (MAX_SEED, 0)


def test_random_seed_stays_in_range():
    """Randomized seeds are valid seeds."""
    rng = random.Random(0)
    seeds = [random_seed(rng) for _ in range(1000)]
    assert all(0 <= s <= MAX_SEED for s in seeds)
    assert len(set(seeds)) > 990


@pytest.mark.parametrize("ratio", form.ASPECT_RATIOS)
def test_aspect_presets_snap_to_valid_sizes(ratio):
    """Every aspect preset gives a valid size close to its ratio."""
    width, height = form.aspect_size(ratio)
    GenerationRequest(width=width, height=height)  # raises if invalid
    w, h = (int(x) for x in ratio.split(":"))
    assert abs(width / height - w / h) < 0.05


def test_progress_fraction_and_eta_cover_all_images():
    """Progress counts steps across the whole batch and projects the time left."""
    p = Progress("denoising", 10.0, image_index=1, num_images=2, step=5, total_steps=10)
    assert p.fraction == 0.75
    assert p.eta == pytest.approx(10.0 / 3)
    assert Progress("queued", 3.0, queue_position=2).eta is None


def test_form_hand_over_fills_fields_and_turns_off_randomize():
    """Values handed over by another page replace the form's and keep their seed."""
    state: dict = {}
    form.prepare(state)
    state["randomize_seed"] = True
    form.remember(state)
    form.hand_over(state, {"prompt": "a boat", "seed": 99, "unknown": 1})
    form.prepare(state)
    assert state["prompt"] == "a boat"
    assert state["seed"] == 99
    assert state["randomize_seed"] is False
    assert "unknown" not in state
