"""Run a planned grid cell by cell: each cell an ordinary one-image request.

`run_grid` is the loop both backends use (`Backend.generate_grid`): stop between cells and
inside one, keep the finished cells, report each as it lands. The backend supplies
`run_cell`, which makes one cell's request the way a Generate click would: the local one
takes the generation slot for that cell only (other people's requests take turns between
cells) and applies the cell's LoRAs for that cell only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.generation import GenerationResult, GenerationStopped
from core.grid import Cell, GridPlan
from core.queue import QueueCancelled, describe_request

RunCell = Callable[[Cell], GenerationResult]


@dataclass
class GridOutcome:
    """Each cell's result in cell order (None: not run) and how the grid ended."""

    results: list[GenerationResult | None]
    stopped: bool = False
    cancelled: str = ""  # an admin's cancel of a cell ended the grid: the message to show
    seconds: list[float] = field(default_factory=list)  # per finished cell, wall time

    @property
    def images(self) -> list[Any]:
        """Each cell's image (PIL), None where the cell did not run."""
        return [None if r is None else r.images[0] for r in self.results]

    @property
    def done(self) -> int:
        return sum(result is not None for result in self.results)


def cell_label(plan: GridPlan, cell: Cell) -> str:
    """What an admin sees of a grid's cell in the queue: "grid 3/6 · 1 × 1024×1024, 40 steps"."""
    return f"grid {cell.index + 1}/{plan.count} · {describe_request(cell.request)}"


def run_grid(
    plan: GridPlan,
    run_cell: RunCell,
    *,
    should_stop: Callable[[], bool] | None = None,
    on_cell: Callable[[Cell, GenerationResult], None] | None = None,
) -> GridOutcome:
    """Run the cells in order; stop before the next cell or inside one when asked.

    A stop, or an admin's cancel of the running or waiting cell, keeps the finished cells
    (the one interrupted is not kept, like a stopped single image). Any other error
    propagates; the caller still has the cells that `on_cell` saw.
    """
    outcome = GridOutcome(results=[None] * plan.count)
    for cell in plan.cells:
        if should_stop is not None and should_stop():
            outcome.stopped = True
            break
        start = time.perf_counter()
        try:
            result = run_cell(cell)
        except GenerationStopped:
            outcome.stopped = True
            break
        except QueueCancelled as exc:  # an admin freed the model: the grid ends like a Stop
            outcome.stopped, outcome.cancelled = True, str(exc)
            break
        outcome.results[cell.index] = result
        outcome.seconds.append(time.perf_counter() - start)
        if on_cell is not None:
            on_cell(cell, result)
    return outcome
