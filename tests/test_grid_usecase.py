"""The X/Y grid use case on the real tiny pipeline and real stores: every cell an ordinary
Seed history record linked to its grid, the daily limit held for all cells up front (and
refused with the numbers before anything runs), Stop keeping finished cells and giving the
rest back, the labelled PNG with its axes, and a stored grid drawn again."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from core import history, limits
from core.auth import Visitor
from core.generation import GenerationRequest
from core.grid import plan_grid
from core.local import LocalBackend
from core.metadata import parse_parameters, read_png_text
from core.models import get_family
from core.settings import load_settings
from core.usecases import (
    generate_grid_and_keep,
    plan_from_form,
    redraw_grid,
    regenerate_and_verify,
)
from core.usecases.grid import grid_from_cells
from tests.conftest import SMALL, current_store

ALICE = Visitor(id="alice@example.com", allowed=True)
BASE = GenerationRequest(prompt="a red fox", guidance_scale=4.5, seed=5, family="demo", **SMALL)


class Stopped(BaseException):
    """What Streamlit's Stop raises inside a callback (not an Exception)."""


@pytest.fixture(name="backend", scope="module")
def fixture_backend():
    backend = LocalBackend(model="demo", dtype="float32")
    backend.ensure_loaded()
    return backend


def _run(plan, backend, **options):
    return generate_grid_and_keep(
        plan,
        settings=load_settings(),
        visitor=ALICE,
        backend=backend,
        session_id="grid-test",
        **options,
    )


def _pixels(png: bytes) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB").tobytes()


def test_each_cell_is_a_record_of_its_grid_and_the_grid_png_lists_the_axes(
    engine, backend, monkeypatch
):
    """A 2-cell grid under a daily limit: both cells saved as ordinary records pointing to
    the grid (their places converted, none left held), the grid row done, the PNG's
    `parameters` naming the axes, the grid drawn again from the records pixel for pixel,
    and a cell that verifies like any image."""
    monkeypatch.setenv("SD_DAILY_LIMIT", "10")
    plan = plan_grid(BASE, x_kind="seed", x_text="5, 6")
    landed = []
    outcome = _run(plan, backend, on_cell=lambda shown: landed.append(shown.index))
    made = outcome.made
    assert outcome.problem is None and landed == [0, 1] and made.done == 2 and not made.stopped
    store = current_store()
    records = store.grids.cells(made.grid_id)
    assert [(r.grid_cell, r.seed) for r in records] == [(0, 5), (1, 6)]
    assert [r.id for r in records] == [c.record_id for c in made.cells]
    assert store.png_bytes(records[1].id) == made.cells[1].png
    assert store.usage(ALICE.id, limits.day_start(records[0].created_at)) == (2, 0)
    row = store.grids.get(made.grid_id)
    assert (row.state, row.columns, row.rows) == ("done", 2, 1)
    assert [c["record"] for c in row.spec["cells"]] == [r.id for r in records]
    parameters = read_png_text(made.png)["parameters"]
    assert parse_parameters(parameters).extras["X Type"] == "Seed"
    assert 'X Values: "5, 6"' in parameters
    assert _pixels(redraw_grid(store, made.grid_id).png) == _pixels(made.png)
    verified = regenerate_and_verify(
        store, records[1], settings=load_settings(), visitor=ALICE, backend=backend
    )
    assert verified.verification is not None and verified.verification.identical


def test_a_grid_over_the_daily_allowance_is_refused_before_anything_runs(backend, monkeypatch):
    """Limit 3 with 1 image made today: a 2×2 grid is refused with the numbers, both when it
    is planned (before the click) and at the click (the atomic reservation); nothing runs,
    nothing is kept or held."""
    monkeypatch.setenv("SD_DAILY_LIMIT", "3")
    settings = load_settings()
    backend.generate(BASE)  # not kept: only saved images count
    store = current_store()
    record = history.new_record(
        BASE, seed=1, facts={}, session_id="s", duration_seconds=0.1, owner=ALICE.id
    )
    store.save(Image.new("RGB", (8, 8)), record)
    planned = plan_from_form(
        BASE,
        settings=settings,
        visitor=ALICE,
        x_kind="seed",
        x_text="1, 2",
        y_kind="guidance",
        y_text="3, 6",
    )
    message = "This grid has 4 cells (4 images) but you have 2 of 3 images left today"
    assert planned.plan is None and message in planned.problem
    plan = plan_grid(BASE, x_kind="seed", x_text="1, 2", y_kind="guidance", y_text="3, 6")
    outcome = _run(plan, backend, on_cell=lambda shown: pytest.fail("a cell ran"))
    assert outcome.failed_at == "allowance" and message in outcome.problem
    assert store.count() == 1 and store.held(ALICE.id) == 0


def test_stop_mid_grid_keeps_finished_cells_and_gives_back_the_other_places(backend, monkeypatch):
    """Stop after the first of 3 cells: that cell is kept (linked to its grid), the other
    two places are given back, the grid row says stopped, and the PNG shows the rest as
    not run."""
    monkeypatch.setenv("SD_DAILY_LIMIT", "5")
    plan = plan_grid(BASE, x_kind="guidance", x_text="3, 4.5, 6")
    stop = {"now": False}
    outcome = _run(
        plan,
        backend,
        should_stop=lambda: stop["now"],
        on_cell=lambda shown: stop.update(now=True),
    )
    made = outcome.made
    assert made.stopped and made.done == 1 and made.cells[1:] == (None, None)
    store = current_store()
    assert store.count() == 1 and store.held(ALICE.id) == 0
    assert store.grids.get(made.grid_id).state == "stopped"
    with Image.open(io.BytesIO(made.png)) as picture:
        assert picture.size[0] >= 3 * 512  # three columns drawn, two of them "not run"


def test_streamlits_stop_inside_a_cell_keeps_the_finished_ones(backend, monkeypatch):
    """Streamlit's Stop arrives as an exception from a progress callback in cell 2: it goes
    through, cell 1 stays kept, no place stays held, the grid row says stopped; the page
    then draws the grid from what the session kept."""
    monkeypatch.setenv("SD_DAILY_LIMIT", "5")
    plan = plan_grid(BASE, x_kind="seed", x_text="1, 2")
    kept = []

    def on_progress(cell, progress):
        if cell.index == 1 and progress.phase == "denoising":
            raise Stopped

    with pytest.raises(Stopped):
        _run(plan, backend, on_progress=on_progress, on_cell=kept.append)
    store = current_store()
    grid_id = store.get(kept[0].record_id).grid_id
    (record,) = store.grids.cells(grid_id)
    assert record.id == kept[0].record_id and store.held(ALICE.id) == 0
    assert store.grids.get(record.grid_id).state == "stopped"
    partial = grid_from_cells(plan, [kept[0], None], grid_id=record.grid_id)
    assert partial.done == 1 and "X Type: Seed" in read_png_text(partial.png)["parameters"]
    assert not backend.queue.busy


def test_plan_from_form_names_the_axis_and_the_value():
    """A bad value is refused before the click, naming the axis, the value and the range."""
    planned = plan_from_form(
        BASE,
        settings=load_settings(),
        visitor=ALICE,
        x_kind="guidance",
        x_text="3, 25",
    )
    assert planned.plan is None and planned.axis == "X"
    assert "25 is out of range for Guidance (0–20)" in planned.problem


@pytest.mark.parametrize(
    ("family", "layers"), [("demo", (1,)), ("sd35-medium", (7, 8, 9)), ("sd35-large", (7, 8, 9))]
)
def test_an_slg_axis_skips_the_layers_the_family_declares(family, layers):
    """The grid's SLG cells skip the same layers as the generator's SLG toggle: the family's
    declaration (the demo's 1; Medium's and Large's 7, 8, 9, off by default on Large)."""
    base = GenerationRequest(
        prompt="a red fox", family=family, width=512, height=512, num_inference_steps=2
    )
    planned = plan_from_form(
        base, settings=load_settings(), visitor=ALICE, x_kind="slg", x_text="off, 2.8"
    )
    off, on = (cell.request.pipeline_kwargs() for cell in planned.plan.cells)
    assert "skip_guidance_layers" not in off
    assert on["skip_guidance_layers"] == layers == get_family(family).slg_layers


def test_two_grids_clicked_at_once_never_pass_the_daily_limit(backend, engine, monkeypatch):
    """Limit 3, two 2-cell grids started at the same moment by one person (two tabs): the
    places are reserved atomically in the store, so one grid runs and the other is refused
    before any of its cells, on either engine; 2 images are kept and nothing stays held."""
    import threading

    monkeypatch.setenv("SD_DAILY_LIMIT", "3")
    plan = plan_grid(BASE, x_kind="seed", x_text="1, 2")
    start = threading.Barrier(2)
    outcomes = []

    def click() -> None:
        start.wait()
        outcomes.append(_run(plan, backend))

    tabs = [threading.Thread(target=click) for _ in range(2)]
    for tab in tabs:
        tab.start()
    for tab in tabs:
        tab.join(timeout=300)
    assert sorted(o.failed_at or "ran" for o in outcomes) == ["allowance", "ran"]
    store = current_store()
    assert store.count() == 2 and store.held(ALICE.id) == 0
