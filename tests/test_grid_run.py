"""Grids on the real tiny SD3 pipeline: cells equal the same requests made alone; Stop keeps
finished cells; a LoRA weight axis; the pipeline is left clean."""

from __future__ import annotations

import pytest

from core.demo_lora import make_demo_lora
from core.generation import GenerationRequest, GenerationStopped
from core.grid import plan_grid
from core.grid_run import PipelineCellRunner, resolve_loras, run_grid
from core.local import run_pipeline
from core.lora import LoraChoice, LoraError, discover_loras, has_adapters
from core.queue import GenerationQueue, fair_slot
from tests.conftest import SMALL

BASE = GenerationRequest(prompt="a red fox", guidance_scale=4.5, seed=11, **SMALL)


@pytest.fixture(name="pipe", scope="module")
def fixture_pipe():
    """A tiny pipeline of this module's own: LoRAs go on and off it."""
    from core.demo import build_demo_pipeline

    pipe = build_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _alone(pipe, request) -> bytes:
    images, _ = run_pipeline(pipe, request)
    return images[0].tobytes()


def test_grid_cells_equal_the_same_requests_made_alone(pipe):
    """A 2×2 grid (seed × prompt S/R): each cell's pixels are those of its request run alone,
    and each distinct prompt is encoded once for the grid."""
    plan = plan_grid(BASE, x_kind="seed", x_text="11, 12", y_kind="prompt_sr", y_text="red, blue")
    queue = GenerationQueue()
    runner = PipelineCellRunner(pipe, plan, slot=lambda cell: queue.slot(user="grid-owner"))
    landed = []
    outcome = run_grid(plan, runner, on_cell=lambda cell, image: landed.append(cell.index))
    assert landed == [0, 1, 2, 3] and outcome.done == 4 and not outcome.stopped
    assert (runner.prompt_cache.misses, runner.prompt_cache.hits) == (2, 2)
    last = plan.cells[3]  # seed 12, "a blue fox": both axes applied
    assert (last.request.seed, last.request.prompt) == (12, "a blue fox")
    assert outcome.images[3].tobytes() == _alone(pipe, last.request)
    assert outcome.images[0].tobytes() != outcome.images[1].tobytes()


def test_stop_mid_grid_keeps_finished_cells(pipe):
    """Stop asked during cell 2's steps (seen through the fair slot's stop check): cell 1 is
    kept, cells 2 and 3 are not run, and the queue is free again."""
    plan = plan_grid(BASE, x_kind="seed", x_text="1, 2, 3")
    stop = {"now": False}

    def on_progress(progress):
        if progress.phase == "denoising" and on_cell_calls:
            stop["now"] = True

    on_cell_calls: list[int] = []
    queue = GenerationQueue()
    runner = PipelineCellRunner(
        pipe,
        plan,
        slot=lambda cell: fair_slot(queue, cell.request, "grid-owner", None, lambda: stop["now"]),
        on_progress=on_progress,
    )
    outcome = run_grid(
        plan,
        runner,
        should_stop=lambda: stop["now"],
        on_cell=lambda cell, image: on_cell_calls.append(cell.index),
    )
    assert outcome.stopped and on_cell_calls == [0]
    assert outcome.images[0] is not None and outcome.images[1:] == [None, None]
    assert not queue.busy and queue.waiting == 0


def test_an_admin_cancel_mid_grid_ends_it_keeping_finished_cells(pipe):
    """An admin cancels the grid's running cell: the grid ends with the cancel message and
    cell 1 kept."""
    plan = plan_grid(BASE, x_kind="seed", x_text="1, 2")
    queue = GenerationQueue()
    done: list[int] = []

    def on_progress(progress):
        if progress.phase == "denoising" and done:
            running = next(e for e in queue.entries() if e.running)
            queue.cancel(running.id, by="admin")

    runner = PipelineCellRunner(
        pipe,
        plan,
        slot=lambda cell: fair_slot(queue, cell.request, "grid-owner", None, None),
        on_progress=on_progress,
    )
    outcome = run_grid(plan, runner, on_cell=lambda cell, image: done.append(cell.index))
    assert outcome.stopped and "An admin cancelled" in outcome.cancelled
    assert done == [0] and outcome.images[1] is None


def test_stop_before_the_first_cell_runs_nothing(pipe):
    plan = plan_grid(BASE, x_kind="seed", x_text="1, 2")

    def boom(cell):
        raise AssertionError("no cell may run")

    outcome = run_grid(plan, boom, should_stop=lambda: True)
    assert outcome.stopped and outcome.done == 0


def test_a_cell_that_raises_stopped_ends_the_grid_quietly():
    plan = plan_grid(BASE, x_kind="seed", x_text="1, 2")

    def stopped(cell):
        raise GenerationStopped(1, 2)

    assert run_grid(plan, stopped).stopped


def test_lora_weight_axis_runs_each_cell_with_its_weight_and_leaves_the_pipeline_clean(
    pipe, tmp_path
):
    """Weight 0 equals the request without the LoRA; weight 1 differs; no adapter is left."""
    make_demo_lora(pipe, tmp_path / "loras" / "grain.safetensors")
    found = discover_loras(tmp_path / "loras")
    plan = plan_grid(BASE, x_kind="lora_weight", x_text="0, 1", x_lora="grain")
    runner = PipelineCellRunner(pipe, plan, lora_files=found.by_name())
    outcome = run_grid(plan, runner)
    assert not has_adapters(pipe)
    plain = _alone(pipe, plan.cells[0].request)
    assert outcome.images[0].tobytes() == plain
    assert outcome.images[1].tobytes() != plain


def test_a_grid_naming_a_missing_lora_is_refused_before_it_runs():
    plan = plan_grid(BASE, x_kind="seed", x_text="1", loras=[LoraChoice("absent", 1.0)])
    with pytest.raises(LoraError, match="not found in the LoRA folder: `absent`"):
        resolve_loras(plan, {})


def test_an_slg_axis_reaches_the_pipeline(pipe):
    """SLG cells pass skip_guidance_layers/scale through run_pipeline: on differs from off."""
    window = {"skip_layer_guidance_start": 0.0, "skip_layer_guidance_stop": 1.0}
    plan = plan_grid(BASE, x_kind="slg", x_text="off, 2.8", slg_layers=(1,), base_extra=window)
    assert plan.notes == ()
    outcome = run_grid(plan, PipelineCellRunner(pipe, plan))
    assert outcome.done == 2
    assert outcome.images[0].tobytes() != outcome.images[1].tobytes()
