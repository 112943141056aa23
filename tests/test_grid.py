"""X/Y grids: parsing the axes, planning the cells, the limits, and running them for real."""

from __future__ import annotations

import pytest

from core.generation import MAX_SEED, GenerationRequest
from core.grid import (
    MAX_AXIS_TEXT,
    MAX_CELLS,
    GridCellRequest,
    GridError,
    Ranges,
    distinct_prompts,
    parse_axis,
    plan_grid,
    split_values,
)
from core.limits import Allowance, LimitReached
from core.lora import LoraChoice
from tests.conftest import SMALL

BASE = GenerationRequest(prompt="a red fox in snow", negative_prompt="blurry red", seed=7, **SMALL)


# --- values as typed ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "text", "values"),
    [
        ("guidance", "3, 4.5, 6", (3.0, 4.5, 6.0)),
        ("steps", "20-40 (+10)", (20, 30, 40)),
        ("steps", "40-20 (-10)", (40, 30, 20)),
        ("steps", "1-3", (1, 2, 3)),
        ("guidance", "1-10 [5]", (1.0, 3.25, 5.5, 7.75, 10.0)),
        ("steps", "10-20 [3]", (10, 15, 20)),
        ("guidance", "0-1 (+0.25)", (0.0, 0.25, 0.5, 0.75, 1.0)),
        ("seed", "1-3, 7, 9-10", (1, 2, 3, 7, 9, 10)),
        ("seed", f"0, {MAX_SEED}", (0, MAX_SEED)),
        ("guidance", " 3 ,4.5,, ", (3.0, 4.5)),
        ("lora_weight", "-1-1 (+0.5)", (-1.0, -0.5, 0.0, 0.5, 1.0)),
    ],
)
def test_lists_and_ranges_expand_like_a1111(kind, text, values):
    """Lists, `a-b (+s)`, descending ranges and the `a-b [n]` count form give these values."""
    axis = parse_axis(kind, text, lora="style" if kind == "lora_weight" else "")
    assert axis.values == values
    assert len(axis.labels) == len(values)


def test_float_steps_read_cleanly():
    """A 0.1 step gives labels 0.3, not 0.30000000000000004."""
    assert parse_axis("guidance", "0-1 (+0.1)").labels[3] == "0.3"


def test_slg_takes_on_off_and_scales():
    """SLG values: off (None), on (the family's default scale) or scales; 0 is off."""
    axis = parse_axis("slg", "off, on, 0, 1-3 [3]", ranges=Ranges(slg_default=2.5))
    assert axis.values == (None, 2.5, None, 1.0, 2.0, 3.0)
    assert axis.labels == ("off", "2.5", "off", "1", "2", "3")


def test_values_in_quotes_may_hold_commas():
    """As A1111 (CSV): `"red, white", blue` is two values."""
    assert split_values('"red, white", blue') == ["red, white", "blue"]


@pytest.mark.parametrize(
    ("kind", "text", "says"),
    [
        ("guidance", "3, x", "'x' is not a number or a range"),
        ("guidance", "25", "25 is out of range for Guidance (0–20)"),
        ("guidance", "-1", "-1 is out of range for Guidance (0–20)"),
        ("steps", "0", "0 is out of range for Steps (1–100)"),
        ("steps", "4.5", "whole numbers"),
        ("steps", "1.5-3", "not a range of whole numbers"),
        ("seed", f"{MAX_SEED + 1}", f"out of range for Seed (0–{MAX_SEED})"),
        ("steps", "1-1000000", "makes 1,000,000 values; a grid holds at most 36"),
        ("steps", "1-10 [500]", "makes 500 values"),
        ("steps", "10-1 (+1)", "never reaches 1 with step 1. Use a negative step"),
        ("steps", "1-5 (+0)", "never reaches"),
        ("guidance", "nan", "not a number or a range"),
        ("guidance", "inf", "not a number or a range"),
        ("guidance", "1e3", "not a number or a range"),
        ("guidance", "", "type at least one Guidance value"),
        ("slg", "maybe", "not a number or a range"),
        ("slg", "11", "out of range for SLG scale (0–10)"),
        ("strength", "0.5", "image-to-image only"),
        ("lora_weight", "1", "choose the LoRA"),
        ("nope", "1", "unknown axis"),
    ],
)
def test_bad_values_are_named_with_the_valid_range(kind, text, says):
    """Each bad value gives a message naming it and the range (or the fix)."""
    with pytest.raises(GridError, match=None) as caught:
        parse_axis(kind, text, which="Y")
    assert says in str(caught.value)
    assert caught.value.axis == "Y"


def test_strength_is_checked_when_the_mode_has_it():
    """With a strength range (image-to-image), strength values are checked against it."""
    ranges = Ranges(strength=(0.0, 1.0))
    assert parse_axis("strength", "0.25-0.75 (+0.25)", ranges=ranges).values == (0.25, 0.5, 0.75)
    with pytest.raises(GridError, match=r"1.5 is out of range for Strength \(0–1\)"):
        parse_axis("strength", "1.5", ranges=ranges)


@pytest.fixture(name="img_mode")
def fixture_img_mode():
    """A made-up mode with a strength option (as image-to-image will have), for one test."""
    import dataclasses

    from core import models, modes
    from core.modes import Mode, ModeOption

    mode = Mode(
        id="img-test",
        label="Image test",
        remote_task="image_to_image",
        options=(
            ModeOption(
                name="strength",
                label="Strength",
                kind="float",
                default=0.6,
                low=0.0,
                high=1.0,
                infotext="Denoising strength",
                pipeline_arg="strength",
            ),
        ),
    )
    medium = models.FAMILIES[0]
    pipelines = {**medium.pipelines, mode.id: "StableDiffusion3Pipeline"}
    models.FAMILIES[0] = dataclasses.replace(medium, pipelines=pipelines)
    modes.MODES.append(mode)
    yield mode
    modes.MODES.remove(mode)
    models.FAMILIES[0] = medium


def test_a_strength_axis_sets_the_modes_strength_option(img_mode):
    """With a mode that has `strength`, the axis takes that option's range and each cell's
    request carries its value as a mode option (passed to the pipeline by the mode)."""
    base = GenerationRequest(prompt="a fox", mode=img_mode.id, **SMALL)
    plan = plan_grid(base, x_kind="strength", x_text="0.3, 0.9")
    assert [c.request.mode_options["strength"] for c in plan.cells] == [0.3, 0.9]
    assert plan.cells[1].request.pipeline_kwargs()["strength"] == 0.9
    with pytest.raises(GridError, match=r"1.2 is out of range for Strength \(0–1\)"):
        plan_grid(base, x_kind="strength", x_text="0.5, 1.2")
    with pytest.raises(GridError, match="image-to-image only"):
        plan_grid(BASE, x_kind="strength", x_text="0.5")


def test_axis_text_is_capped_before_it_is_split():
    """A pasted megabyte is refused by its length, naming the cap."""
    with pytest.raises(GridError, match=f"at most {MAX_AXIS_TEXT:,}"):
        split_values("1," * 500_000)


def test_a_long_run_of_digits_is_refused_quickly():
    """An item is matched on at most 64 characters: a 3,000-digit 'number' is just refused."""
    with pytest.raises(GridError, match="not a number or a range"):
        parse_axis("seed", "9" * 3000)


# --- prompt S/R -----------------------------------------------------------------------------
def test_prompt_sr_replaces_in_prompt_and_negative_the_first_value_first():
    """The first value is the first cell (unchanged prompt); each other replaces it, in the
    prompt and the negative prompt, as A1111."""
    plan = plan_grid(BASE, x_kind="prompt_sr", x_text="red, blue, ")
    prompts = [(c.request.prompt, c.request.negative_prompt) for c in plan.cells]
    assert prompts == [
        ("a red fox in snow", "blurry red"),
        ("a blue fox in snow", "blurry blue"),
        ("a  fox in snow", "blurry "),
    ]
    assert plan.x.labels == ("red", "blue", "(empty)")


def test_prompt_sr_not_found_is_an_error():
    """A first value found in neither prompt is refused, naming it."""
    with pytest.raises(GridError, match="did not find 'wolf' in the prompt or the negative"):
        plan_grid(BASE, x_kind="prompt_sr", x_text="wolf, dog")


def test_prompt_sr_on_both_axes_is_applied_x_then_y():
    """X is applied first, then Y (A1111's order); a Y search text X removed is an error."""
    plan = plan_grid(
        BASE, x_kind="prompt_sr", x_text="fox, cat", y_kind="prompt_sr", y_text="snow, rain"
    )
    assert [c.request.prompt for c in plan.cells] == [
        "a red fox in snow",
        "a red cat in snow",
        "a red fox in rain",
        "a red cat in rain",
    ]
    with pytest.raises(GridError, match="no longer finds"):
        plan_grid(
            BASE,
            x_kind="prompt_sr",
            x_text="fox in snow, dog",
            y_kind="prompt_sr",
            y_text="snow, x",
        )


def test_a_replacement_that_makes_the_prompt_too_long_is_refused_before_running():
    """Every cell's request is validated at planning time."""
    long_prompt = GenerationRequest(prompt="red " * 2400, **SMALL)  # 9,600 characters
    with pytest.raises(GridError, match="Cell 2: Prompt is 19,200 characters"):
        plan_grid(long_prompt, x_kind="prompt_sr", x_text="red, crimson")


# --- the grid ---------------------------------------------------------------------------------
def test_cells_run_row_major_with_y_outer_and_carry_their_labels():
    """Cell i sits at column i % X, row i // X; its request has both axes' values."""
    plan = plan_grid(BASE, x_kind="guidance", x_text="3, 4.5, 6", y_kind="steps", y_text="2, 4")
    assert (plan.columns, plan.rows, plan.count) == (3, 2, 6)
    assert [(c.column, c.row) for c in plan.cells] == [
        (0, 0),
        (1, 0),
        (2, 0),
        (0, 1),
        (1, 1),
        (2, 1),
    ]
    assert [(c.x_label, c.y_label) for c in plan.cells][4] == ("4.5", "4")
    cell = plan.cells[4]
    assert (cell.request.guidance_scale, cell.request.num_inference_steps) == (4.5, 4)
    assert cell.request.seed == BASE.seed and cell.request.num_images == 1
    assert type(cell.request) is GenerationRequest
    assert plan.infotext_fields() == {
        "X Type": "Guidance",
        "X Values": "3, 4.5, 6",
        "Y Type": "Steps",
        "Y Values": "2, 4",
    }


def test_more_than_36_cells_is_refused_with_the_numbers():
    """7 × 6 = 42 cells: refused before anything runs, naming the count and the cap."""
    with pytest.raises(GridError, match=r"7 × 6 = 42 cells; at most 36"):
        plan_grid(BASE, x_kind="seed", x_text="1-7", y_kind="steps", y_text="1-6")
    assert (
        plan_grid(BASE, x_kind="seed", x_text="1-6", y_kind="steps", y_text="1-6").count
        == MAX_CELLS
    )


def test_the_same_axis_twice_is_refused():
    with pytest.raises(GridError, match="both Seed"):
        plan_grid(BASE, x_kind="seed", x_text="1, 2", y_kind="seed", y_text="3")


def test_a_grid_over_the_daily_allowance_is_refused_with_the_numbers():
    """4 cells with 3 images left today: LimitReached names both, before anything runs."""
    allowance = Allowance(limit=10, used=7, resets_at=0.0)
    with pytest.raises(LimitReached, match="has 4 cells .4 images. but you have 3 of 10"):
        plan_grid(BASE, x_kind="seed", x_text="1-4", allowance=allowance)
    assert plan_grid(BASE, x_kind="seed", x_text="1-3", allowance=allowance).count == 3
    assert plan_grid(BASE, x_kind="seed", x_text="1-4", allowance=Allowance(0, 99, 0.0)).count == 4


def test_slg_cells_carry_the_pipeline_arguments():
    """An SLG cell adds skip_guidance_layers/scale to the pipeline call; off removes them."""
    plan = plan_grid(
        BASE,
        x_kind="slg",
        x_text="off, 2.8",
        slg_layers=(7, 8, 9),
        base_extra={"skip_guidance_layers": (7,), "skip_layer_guidance_scale": 1.0},
    )
    off, on = (c.request.pipeline_kwargs() for c in plan.cells)
    assert "skip_guidance_layers" not in off
    assert on["skip_guidance_layers"] == (7, 8, 9) and on["skip_layer_guidance_scale"] == 2.8
    assert isinstance(plan.cells[1].request, GridCellRequest)
    assert hash(plan.cells[1].request) != hash(plan.cells[0].request)
    with pytest.raises(GridError, match="names no layers"):
        plan_grid(BASE, x_kind="slg", x_text="on")


def test_slg_cells_that_cannot_act_are_noted():
    """Guidance ≤ 1 turns SLG off; diffusers' 1 %–20 % window holds no step of 2."""
    plan = plan_grid(
        BASE, x_kind="slg", x_text="on", y_kind="guidance", y_text="1, 4.5", slg_layers=(7,)
    )
    assert plan.notes == (
        "SLG acts only with guidance above 1: no effect in cell(s) 1.",
        "SLG acts only between its start and stop fractions of the steps, which hold no step "
        "in cell(s) 1, 2 (more steps help).",
    )
    forty = GenerationRequest(prompt="x", num_inference_steps=40, width=512, height=512)
    assert plan_grid(forty, x_kind="slg", x_text="on", slg_layers=(7,)).notes == ()


def test_lora_weight_axis_sets_that_loras_weight_per_cell():
    """The axis replaces the chosen LoRA's weight (or adds it); other LoRAs stay."""
    loras = (LoraChoice("grain", 0.5), LoraChoice("style", 1.0))
    plan = plan_grid(BASE, x_kind="lora_weight", x_text="0, 1", x_lora="style", loras=loras)
    assert [c.loras for c in plan.cells] == [
        (LoraChoice("grain", 0.5), LoraChoice("style", 0.0)),
        (LoraChoice("grain", 0.5), LoraChoice("style", 1.0)),
    ]
    assert plan.x.title == "LoRA weight (style)"
    added = plan_grid(BASE, x_kind="lora_weight", x_text="0.5", x_lora="new")
    assert added.cells[0].loras == (LoraChoice("new", 0.5),)


def test_distinct_prompts_counts_what_the_grid_encodes():
    plan = plan_grid(BASE, x_kind="seed", x_text="1-3", y_kind="prompt_sr", y_text="red, blue")
    assert distinct_prompts(plan) == 2
    plan = plan_grid(BASE, x_kind="guidance", x_text="1, 4.5, 6")  # CFG off and on
    assert distinct_prompts(plan) == 2
