"""Grids on the real tiny SD3 pipeline through the local backend: cells equal the same
requests made alone; Stop and an admin's cancel keep finished cells; a LoRA weight axis;
the pipeline is left clean."""

from __future__ import annotations

import threading
import time

import pytest

import core.local
from core.demo_lora import make_demo_lora
from core.generation import GenerationRequest, GenerationStopped
from core.grid import plan_grid
from core.grid_run import run_grid
from core.local import LocalBackend
from core.lora import LoraChoice, LoraError, has_adapters
from tests.conftest import SMALL

BASE = GenerationRequest(prompt="a red fox", guidance_scale=4.5, seed=11, family="demo", **SMALL)


@pytest.fixture(name="backend", scope="module")
def fixture_backend(tmp_path_factory):
    """A local backend on the demo model of this module's own (LoRAs go on and off it),
    with a LoRA folder holding one LoRA made for it."""
    folder = tmp_path_factory.mktemp("loras")
    backend = LocalBackend(model="demo", dtype="float32", lora_dir=folder)
    make_demo_lora(backend.ensure_loaded().pipe, folder / "grain.safetensors")
    return backend


def _alone(backend, request) -> bytes:
    return backend.generate(request).images[0].tobytes()


def test_grid_cells_equal_the_same_requests_made_alone(backend, monkeypatch):
    """A 2×2 grid (seed × prompt S/R): each cell's pixels are those of its request made
    alone, each distinct prompt is encoded once for the grid, and each cell took its own
    turn in the queue under the grid's label."""
    encoded, labels = [], []
    real_encode = core.local.encode_prompt

    def counting_encode(pipe, request):
        encoded.append(request.prompt)
        labels.append(backend.queue.entries()[0].label)
        return real_encode(pipe, request)

    monkeypatch.setattr(core.local, "encode_prompt", counting_encode)
    plan = plan_grid(BASE, x_kind="seed", x_text="11, 12", y_kind="prompt_sr", y_text="red, blue")
    landed = []
    outcome = backend.generate_grid(
        plan, user="grid-owner", on_cell=lambda cell, result: landed.append(cell.index)
    )
    assert landed == [0, 1, 2, 3] and outcome.done == 4 and not outcome.stopped
    assert encoded == ["a red fox", "a blue fox"]
    assert labels[0].startswith("grid 1/4 · 1 × 512×512")
    monkeypatch.setattr(core.local, "encode_prompt", real_encode)
    last = plan.cells[3]  # seed 12, "a blue fox": both axes applied
    assert (last.request.seed, last.request.prompt) == (12, "a blue fox")
    assert outcome.images[3].tobytes() == _alone(backend, last.request)
    assert outcome.images[0].tobytes() != outcome.images[1].tobytes()
    assert not backend.queue.busy


def test_another_persons_request_takes_its_turn_between_the_grids_cells(backend):
    """The grid is one job in the fair queue: a request someone else makes while cell 1
    runs gets the pipeline before cell 2, and the grid then carries on with its cells."""
    plan = plan_grid(BASE, x_kind="seed", x_text="1, 2, 3")
    turns: list[str] = []  # who held the pipeline, in order (first step of each)
    lock = threading.Lock()
    other: dict[str, object] = {}

    def note(who: str) -> None:
        with lock:
            if who not in turns:
                turns.append(who)

    def bob() -> None:
        request = GenerationRequest(prompt="a cat", seed=3, family="demo", **SMALL)

        def progress(p) -> None:
            if p.phase == "denoising":
                note("bob")

        other["result"] = backend.generate(request, user="bob", on_progress=progress)

    def on_progress(cell, progress):
        if progress.phase != "denoising":
            return
        note(f"cell {cell.index + 1}")
        if cell.index == 0 and "thread" not in other:
            other["thread"] = thread = threading.Thread(target=bob)
            thread.start()
            deadline = time.monotonic() + 60  # bob joins the queue while cell 1 holds it
            while backend.queue.waiting < 1 and time.monotonic() < deadline:
                time.sleep(0.01)

    outcome = backend.generate_grid(plan, user="grid-owner", on_progress=on_progress)
    other["thread"].join(timeout=120)
    assert turns == ["cell 1", "bob", "cell 2", "cell 3"]
    assert outcome.done == 3 and other["result"].images
    assert not backend.queue.busy and backend.queue.waiting == 0


def test_stop_mid_grid_keeps_finished_cells(backend):
    """Stop asked during cell 2's steps: cell 1 is kept, cells 2 and 3 are not run, and
    the queue is free again."""
    plan = plan_grid(BASE, x_kind="seed", x_text="1, 2, 3")
    stop = {"now": False}
    landed: list[int] = []

    def on_progress(cell, progress):
        if progress.phase == "denoising" and cell.index == 1:
            stop["now"] = True

    outcome = backend.generate_grid(
        plan,
        user="grid-owner",
        on_progress=on_progress,
        should_stop=lambda: stop["now"],
        on_cell=lambda cell, result: landed.append(cell.index),
    )
    assert outcome.stopped and landed == [0]
    assert outcome.images[0] is not None and outcome.images[1:] == [None, None]
    assert not backend.queue.busy and backend.queue.waiting == 0


def test_an_admin_cancel_mid_grid_ends_it_keeping_finished_cells(backend):
    """An admin cancels the grid's running cell: the grid ends with the cancel message and
    cell 1 kept."""
    plan = plan_grid(BASE, x_kind="seed", x_text="1, 2")
    done: list[int] = []

    def on_progress(cell, progress):
        if progress.phase == "denoising" and cell.index == 1:
            running = next(e for e in backend.queue.entries() if e.running)
            backend.queue.cancel(running.id, by="admin")

    outcome = backend.generate_grid(
        plan,
        user="grid-owner",
        on_progress=on_progress,
        on_cell=lambda cell, result: done.append(cell.index),
    )
    assert outcome.stopped and "An admin cancelled" in outcome.cancelled
    assert done == [0] and outcome.results[1] is None


def test_stop_before_the_first_cell_runs_nothing():
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


def test_lora_weight_axis_runs_each_cell_with_its_weight_and_leaves_the_pipeline_clean(backend):
    """Weight 0 equals the request without the LoRA; weight 1 differs; no adapter is left;
    each cell's result names the LoRA as applied, with its hash."""
    plan = plan_grid(BASE, x_kind="lora_weight", x_text="0, 1", x_lora="grain")
    outcome = backend.generate_grid(plan)
    assert not has_adapters(backend.loaded.pipe)
    plain = _alone(backend, BASE)
    assert outcome.images[0].tobytes() == plain
    assert outcome.images[1].tobytes() != plain
    (name, sha, weight) = outcome.results[1].loras[0]
    assert (name, weight, len(sha)) == ("grain", 1.0, 64)


def test_a_grid_naming_a_missing_lora_is_refused_before_any_cell_runs(backend):
    plan = plan_grid(BASE, x_kind="seed", x_text="1", loras=[LoraChoice("absent", 1.0)])
    with pytest.raises(LoraError, match="Not in the LoRA folder"):
        backend.generate_grid(plan, on_cell=lambda cell, result: pytest.fail("a cell ran"))


def test_an_slg_axis_reaches_the_pipeline(backend):
    """SLG cells pass skip_guidance_layers/scale to the pipeline: on differs from off."""
    window = {"skip_layer_guidance_start": 0.0, "skip_layer_guidance_stop": 1.0}
    plan = plan_grid(BASE, x_kind="slg", x_text="off, 2.8", slg_layers=(1,), base_extra=window)
    assert plan.notes == ()
    outcome = backend.generate_grid(plan)
    assert outcome.done == 2
    assert outcome.images[0].tobytes() != outcome.images[1].tobytes()
