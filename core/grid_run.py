"""Run a planned grid cell by cell: each cell an ordinary request on the shared pipeline.

`run_grid` is the loop (stop between cells and inside one, keep finished cells, report each
as it lands); `PipelineCellRunner` runs one cell on a pipeline:
it takes the generation slot for that cell only (other people's requests take turns
between cells), applies the cell's LoRAs for that cell only, and encodes each distinct
prompt once per grid (a cache sized to the grid, so other people's prompts between cells
cannot push the grid's out).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.generation import GenerationStopped, ProgressCallback
from core.grid import Cell, GridPlan, distinct_prompts
from core.lora import LoraCache, LoraError, LoraFile
from core.prompt_cache import PromptCache
from core.queue import QueueCancelled
from core.safe_text import quote

RunCell = Callable[[Cell], Any]  # returns the cell's PIL image


@dataclass
class GridOutcome:
    """The cells' images in cell order (None: not run) and how the grid ended."""

    images: list[Any]
    stopped: bool = False
    cancelled: str = ""  # an admin's cancel of a cell ended the grid: the message to show
    seconds: list[float] = field(default_factory=list)  # per finished cell

    @property
    def done(self) -> int:
        return sum(image is not None for image in self.images)


def run_grid(
    plan: GridPlan,
    run_cell: RunCell,
    *,
    should_stop: Callable[[], bool] | None = None,
    on_cell: Callable[[Cell, Any], None] | None = None,
) -> GridOutcome:
    """Run the cells in order; stop before the next cell or inside one when asked.

    A stop, or an admin's cancel of the running or waiting cell, keeps the finished cells
    (the one interrupted is not kept, like a stopped single image). Any other error
    propagates; the caller still has the cells that `on_cell` saw.
    """
    outcome = GridOutcome(images=[None] * plan.count)
    for cell in plan.cells:
        if should_stop is not None and should_stop():
            outcome.stopped = True
            break
        start = time.perf_counter()
        try:
            image = run_cell(cell)
        except GenerationStopped:
            outcome.stopped = True
            break
        except QueueCancelled as exc:  # an admin freed the model: the grid ends like a Stop
            outcome.stopped, outcome.cancelled = True, str(exc)
            break
        outcome.images[cell.index] = image
        outcome.seconds.append(time.perf_counter() - start)
        if on_cell is not None:
            on_cell(cell, image)
    return outcome


def resolve_loras(plan: GridPlan, files: Mapping[str, LoraFile]) -> dict[str, LoraFile]:
    """The files the grid's cells use; raise `LoraError` naming the missing ones (before any
    cell runs)."""
    names = {choice.name for cell in plan.cells for choice in cell.loras}
    missing = sorted(names - set(files))
    if missing:
        shown = ", ".join(quote(name, 40) for name in missing[:5])
        raise LoraError(f"LoRA not found in the LoRA folder: {shown}.")
    return {name: files[name] for name in names}


class PipelineCellRunner:
    """`runner(cell) -> image`: runs `cell.request` with `core.local.run_pipeline`.

    `slot(cell)` is the context that holds the pipeline for one cell, e.g.
    `fair_slot(queue, cell.request, user, on_wait, should_stop)` (whose yielded stop check,
    which also sees an admin's cancel, is then used); without it the caller must hold the
    pipeline.
    LoRA files are read and checked outside the slot, once per grid (`lora_cache`), and
    put on the pipeline inside it for that cell only.
    """

    def __init__(
        self,
        pipe: Any,
        plan: GridPlan,
        *,
        lora_files: Mapping[str, LoraFile] | None = None,
        lora_cache: LoraCache | None = None,
        slot: Callable[[Cell], contextlib.AbstractContextManager[Any]] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_progress: ProgressCallback | None = None,
        model: str = "",
        dtype: str = "",
    ) -> None:
        self.pipe = pipe
        self.files = resolve_loras(plan, lora_files or {})
        self.lora_cache = lora_cache or LoraCache()
        self.prompt_cache = PromptCache(max_entries=max(distinct_prompts(plan), 1))
        self.slot = slot
        self.should_stop = should_stop
        self.on_progress = on_progress
        self.model = model
        self.dtype = dtype

    def __call__(self, cell: Cell) -> Any:
        from core.local import run_pipeline
        from core.lora import applied_loras

        weights = [(self.lora_cache.get(self.files[c.name]), c.weight) for c in cell.loras]
        holder = self.slot(cell) if self.slot is not None else contextlib.nullcontext()
        with holder as held, applied_loras(self.pipe, weights) as applied:
            # `core.queue.fair_slot` yields the stop check to run with (the caller's Stop or
            # an admin's cancel); a plain slot yields its queue entry.
            should_stop = held if callable(held) else self.should_stop
            # Adapted CLIP encoders make other embeddings: no cache for those cells.
            cache = None if applied.touches_text_encoders else self.prompt_cache
            images, _ = run_pipeline(
                self.pipe,
                cell.request,
                cache=cache,
                should_stop=should_stop,
                on_progress=self.on_progress,
                model=self.model,
                dtype=self.dtype,
            )
        return images[0]
