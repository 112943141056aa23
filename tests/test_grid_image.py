"""The labelled grid PNG: layout, placeholders for cells not run, size bound, metadata."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from core.generation import GenerationRequest
from core.grid import plan_grid
from core.grid_image import (
    GRID_JSON_KEY,
    MAX_GRID_SIDE,
    PLACEHOLDER,
    draw_grid,
    draw_plan,
    grid_infotext,
    grid_png,
    grid_record,
    layout,
    wrap,
)
from core.metadata import parse_parameters, read_png_text
from tests.conftest import SMALL

BASE = GenerationRequest(prompt="a red fox", seed=3, **SMALL)
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]


def _cells(count, size=(64, 64)):
    return [Image.new("RGB", size, COLOURS[i % len(COLOURS)]) for i in range(count)]


def test_cells_land_in_row_major_order_below_and_beside_their_headers():
    """Cell i is drawn at column i % X, row i // X, after the header row and column."""
    plan = plan_grid(BASE, x_kind="guidance", x_text="3, 4.5, 6", y_kind="steps", y_text="2, 4")
    image = draw_plan(plan, _cells(6), size=(64, 64))
    spec = layout(columns=3, rows=2, width=64, height=64, has_y=True)
    assert image.size == (spec.left + 3 * 64, spec.top + 2 * 64)
    for index in range(6):
        x0, y0 = spec.cell_box(index % 3, index // 3)
        assert image.getpixel((x0 + 32, y0 + 32)) == COLOURS[index % len(COLOURS)]
    header = image.crop((spec.left, 0, image.width, spec.top)).convert("L")
    assert header.getextrema()[0] < 100, "the column headers draw dark text"
    side = image.crop((0, spec.top, spec.left, image.height)).convert("L")
    assert side.getextrema()[0] < 100, "the row headers draw dark text"


def test_cells_not_run_are_grey_placeholders():
    """A stopped grid: finished cells drawn, the others a grey 'not run' box."""
    image = draw_grid(
        [*_cells(2), None, None],
        columns=2,
        rows=2,
        size=(64, 64),
        x_title="Seed",
        x_labels=["1", "2"],
        y_title="Steps",
        y_labels=["2", "4"],
    )
    spec = layout(columns=2, rows=2, width=64, height=64, has_y=True)
    x0, y0 = spec.cell_box(0, 1)
    assert image.getpixel((x0 + 3, y0 + 3)) == PLACEHOLDER
    x0, y0 = spec.cell_box(1, 0)
    assert image.getpixel((x0 + 32, y0 + 32)) == COLOURS[1]


def test_a_6x6_grid_of_1440_cells_is_scaled_to_the_bound():
    """36 cells of 1440² are drawn at 682² each: the cell area stays within 4096 px a side."""
    spec = layout(columns=6, rows=6, width=1440, height=1440, has_y=True)
    assert (spec.cell_width, spec.cell_height) == (682, 682)
    assert 6 * spec.cell_width <= MAX_GRID_SIDE
    image = draw_grid(
        _cells(36, size=(16, 16)),
        columns=6,
        rows=6,
        size=(1440, 1440),
        x_title="Seed",
        x_labels=[str(i) for i in range(6)],
        y_title="Steps",
        y_labels=[str(i) for i in range(6)],
    )
    assert image.size == (spec.left + 6 * 682, spec.top + 6 * 682)
    small = layout(columns=2, rows=1, width=512, height=512, has_y=False)
    assert (small.cell_width, small.scale) == (512, 1.0), "never scaled up or down needlessly"


def test_long_labels_wrap_and_are_cut_with_an_ellipsis():
    """A 200-character S/R value wraps to at most 3 lines inside its column, the last cut."""
    from PIL import ImageFont

    font = ImageFont.load_default(size=16)
    lines = wrap("word " * 40 + "x" * 150, font, 120)
    assert len(lines) == 3 and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 120 for line in lines)
    assert wrap("y" * 300, font, 50)[0]  # one unbreakable word is broken by characters


def test_labels_from_users_are_drawn_as_pixels_whatever_they_hold():
    """Markup, newlines and emoji in labels are only text to draw (nothing interprets them)."""
    draw_grid(
        _cells(2),
        columns=2,
        rows=1,
        size=(64, 64),
        x_title="Prompt S/R",
        x_labels=["![](http://x/y.png)\n<b>", "😀 " * 50],
    )


def test_the_png_lists_the_axes_in_a1111_text_and_json():
    """`parameters` ends with A1111's X/Y keys (parsed back by the importer); the JSON chunk
    lists the axes and which cells ran."""
    plan = plan_grid(
        BASE, x_kind="guidance", x_text="3, 4.5", y_kind="prompt_sr", y_text="red, blue"
    )
    images = [*_cells(3), None]
    canvas = draw_plan(plan, images, size=(64, 64))
    base = "a red fox\nSteps: 2, Sampler: FlowMatchEuler, CFG scale: 3, Seed: 3, Size: 512x512"
    record = grid_record(plan, images, size=(512, 512), scale=0.125, stopped=True)
    png = grid_png(canvas, parameters=grid_infotext(plan, base), record=record)
    texts = read_png_text(png)
    parsed = parse_parameters(texts["parameters"])
    assert parsed.values["prompt"] == "a red fox"
    assert parsed.extras["X Type"] == "Guidance" and parsed.extras["X Values"] == "3, 4.5"
    assert parsed.extras["Y Type"] == "Prompt S/R" and parsed.extras["Y Values"] == "red, blue"
    data = json.loads(texts[GRID_JSON_KEY])
    assert data["x"]["labels"] == ["3", "4.5"] and data["y"]["labels"] == ["red", "blue"]
    assert [c["done"] for c in data["cells"]] == [True, True, True, False]
    assert data["stopped"] is True and data["cell_size"] == [512, 512]


@pytest.mark.parametrize("missing", [[], [None]])
def test_fewer_images_than_cells_draws_placeholders(missing):
    """Images missing from the list (not only None entries) are placeholders too."""
    draw_grid(missing, columns=2, rows=1, size=(32, 32), x_title="Seed", x_labels=["1", "2"])
