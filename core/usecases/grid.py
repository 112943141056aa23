"""The X/Y grid: plan it from the form, run it cell by cell keeping every cell, draw it.

- `plan_from_form` — the checked `GridPlan` for the form's request and the typed axes,
  refused (with the numbers) when it has more cells than the visitor has images left;
- `generate_grid_and_keep` — the "Generate grid" click: hold the daily limit's places for
  every cell up front, load the model, run the cells (one queue turn each), keep each as an
  ordinary history record linked to its grid as it lands, give back what a stop left
  unspent, and draw the labelled grid PNG;
- `redraw_grid` — a stored grid drawn again from its cells' records (the gallery).
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.device import DeviceError
from core.generation import (
    Backend,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    GridProgressCallback,
)
from core.grid import Cell, GridError, GridPlan, limit_message, plan_grid
from core.limits import LimitReached
from core.models import get_family
from core.usecases.allowance import check_allowance, hold_allowance
from core.usecases.load import LoadOutcome, load_model, ready_to_run

if TYPE_CHECKING:
    from core.auth import Visitor
    from core.history import HistoryStore
    from core.settings import Settings


@dataclass(frozen=True)
class PlannedGrid:
    """The form's grid checked: the plan, or why it cannot run (with the numbers)."""

    plan: GridPlan | None = None
    problem: str | None = None
    axis: str = ""  # "X", "Y" or "" (the grid as a whole), where the problem is


def plan_from_form(
    base: GenerationRequest,
    *,
    settings: Settings,
    visitor: Visitor,
    x_kind: str,
    x_text: str,
    y_kind: str | None = None,
    y_text: str = "",
    x_lora: str = "",
    y_lora: str = "",
) -> PlannedGrid:
    """Parse and check the axes against the form's ranges, the 36-cell cap and what the
    visitor has left today (counted now: the click counts again, atomically)."""
    allowance = check_allowance(settings, visitor)
    if allowance.problem is not None and allowance.allowance is None:
        return PlannedGrid(problem=allowance.problem)
    try:
        plan = plan_grid(
            base,
            x_kind=x_kind,
            x_text=x_text,
            y_kind=y_kind or None,
            y_text=y_text,
            x_lora=x_lora,
            y_lora=y_lora,
            slg_layers=get_family(base.family).slg_layers,  # as the generator offers
            allowance=allowance.allowance,
        )
    except GridError as exc:
        return PlannedGrid(problem=str(exc), axis=exc.axis)
    except LimitReached as exc:
        return PlannedGrid(problem=str(exc))
    return PlannedGrid(plan=plan)


@dataclass(frozen=True, kw_only=True)
class GridCellShown:
    """One finished cell as the page shows it (and as the session keeps it)."""

    index: int
    png: bytes  # carries its settings (the stored file when kept)
    record_id: str | None  # None: the history did not keep it
    seed: int
    seconds: float


@dataclass(frozen=True, kw_only=True)
class GridMade:
    """A grid that ran, whole or in part: its cells, the labelled PNG, what went wrong."""

    plan: GridPlan
    grid_id: str  # "" when the history could not keep the grid
    cells: tuple[GridCellShown | None, ...]  # per cell; None: not run
    png: bytes  # the labelled grid, axes in its metadata
    stopped: bool = False
    cancelled: str = ""  # an admin's cancel ended it: its message
    problem: str | None = None  # a failure that ended it after the cells shown
    history_error: str | None = None  # what the history did not keep, and why
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return sum(cell is not None for cell in self.cells)


@dataclass(frozen=True)
class GridOutcome:
    """How a Generate grid click ended: `made` when it ran (even in part), else `problem`."""

    made: GridMade | None = None
    problem: str | None = None  # our words, server paths not hidden yet
    failed_at: str | None = None  # "allowance", "load" or "generate"


@dataclass
class _Run:
    """What one grid run has so far (filled as cells land)."""

    plan: GridPlan
    grid_id: str = ""
    cells: list[GridCellShown | None] = dataclasses.field(default_factory=list)
    images: list[Any] = dataclasses.field(default_factory=list)
    first: Any = None  # the first kept (or made) record: the grid PNG's settings
    history_error: str | None = None

    def __post_init__(self) -> None:
        self.cells = [None] * self.plan.count
        self.images = [None] * self.plan.count

    def spec(self, *, stopped: bool) -> dict[str, Any]:
        from core.grid_image import grid_record

        base = self.plan.cells[0].request
        ids = {c.index: c.record_id for c in self.cells if c is not None}
        return grid_record(
            self.plan,
            self.images,
            size=(base.width, base.height),
            scale=1.0,
            stopped=stopped,
            record_ids=ids,
        )


def _grid_refusal(count: int) -> Callable[[LimitReached], str]:
    """How a grid of `count` cells is refused over the daily limit: with the grid's numbers."""
    return lambda exc: str(exc) if exc.allowance is None else limit_message(count, exc.allowance)


def generate_grid_and_keep(
    plan: GridPlan,
    *,
    settings: Settings,
    visitor: Visitor,
    backend: Backend,
    session_id: str,
    load: Callable[[Backend], LoadOutcome] = load_model,
    on_start: Callable[[], None] | None = None,
    on_progress: GridProgressCallback | None = None,
    on_cell: Callable[[GridCellShown], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> GridOutcome:
    """Run `plan` and keep every cell as an ordinary history record of its grid.

    The places of every cell are held before anything runs (refused with the numbers when
    they do not fit) and what a stop or a failure leaves unspent is given back. Each cell
    is kept as it lands (`on_cell` then shows it), so Stop (`should_stop`, an admin's
    cancel, or Streamlit's stop raised inside `on_progress`) never loses a finished cell.
    """
    # Held at the click: another tab or replica may be spending the same allowance now.
    refusal = _grid_refusal(plan.count)
    with hold_allowance(settings, visitor, wanted=plan.count, refusal=refusal) as hold:
        if not hold.allowed:
            return GridOutcome(problem=hold.problem, failed_at="allowance")
        return _run(
            plan,
            settings=settings,
            visitor=visitor,
            backend=backend,
            session_id=session_id,
            load=load,
            on_start=on_start,
            on_progress=on_progress,
            on_cell=on_cell,
            should_stop=should_stop,
            reservation=hold.reservation,
        )


def _run(
    plan: GridPlan,
    *,
    settings: Settings,
    visitor: Visitor,
    backend: Backend,
    session_id: str,
    load: Callable[[Backend], LoadOutcome],
    on_start: Callable[[], None] | None,
    on_progress: GridProgressCallback | None,
    on_cell: Callable[[GridCellShown], None] | None,
    should_stop: Callable[[], bool] | None,
    reservation: Any,
) -> GridOutcome:
    from core import history

    loaded = ready_to_run(backend, load, on_start)
    if not loaded.ok:
        return GridOutcome(problem=loaded.error, failed_at="load")
    run = _Run(plan)
    run.grid_id = _start_grid(run, settings, visitor)

    def keep(cell: Cell, result: GenerationResult) -> None:
        kept = history.keep_result(
            result,
            backend=backend,
            target=settings,
            session_id=session_id,
            owner=visitor.id,
            reservation=reservation,
            grid=(run.grid_id, cell.index) if run.grid_id else None,
        )
        record = kept.records[0] if kept.records else None
        if kept.error and run.history_error is None:
            run.history_error = kept.error
        if run.first is None:
            run.first = record or _unsaved_record(result, backend, session_id, visitor)
        shown = GridCellShown(
            index=cell.index,
            png=kept.pngs[0],
            record_id=record.id if record is not None else None,
            seed=result.seeds[0],
            seconds=result.generation_seconds,
        )
        run.cells[cell.index], run.images[cell.index] = shown, result.images[0]
        if on_cell is not None:
            on_cell(shown)

    start, state = time.perf_counter(), "failed"
    try:
        outcome = backend.generate_grid(
            plan, user=visitor.id, on_progress=on_progress, should_stop=should_stop, on_cell=keep
        )
        state = "stopped" if outcome.stopped else "done"
    except (GenerationError, DeviceError) as exc:
        if not any(run.cells):
            return GridOutcome(problem=str(exc), failed_at="generate")
        _finish_grid(run, settings, state="failed")
        return GridOutcome(made=_made(run, problem=str(exc), seconds=time.perf_counter() - start))
    except BaseException:  # Streamlit's Stop (or any error): the finished cells stay kept
        _finish_grid(run, settings, state="stopped")
        raise
    _finish_grid(run, settings, state=state)
    made = _made(
        run,
        stopped=outcome.stopped,
        cancelled=outcome.cancelled,
        seconds=time.perf_counter() - start,
    )
    return GridOutcome(made=made)


def _start_grid(run: _Run, settings: Settings, visitor: Visitor) -> str:
    """The grid's row in the history ("" when the history cannot keep it: the cells are
    then kept, or not, like any image, and `history_error` says so)."""
    from core import history

    try:
        store = history.open_store(settings)
        return store.grids.start(
            owner=visitor.id,
            columns=run.plan.columns,
            rows=run.plan.rows,
            spec=run.spec(stopped=False),
        )
    except history.HistoryError as exc:
        run.history_error = f"The grid was not saved to the history: {exc}"
        return ""


def _finish_grid(run: _Run, settings: Settings, *, state: str) -> None:
    from core import history

    if not run.grid_id:
        return
    try:
        history.open_store(settings).grids.finish(
            run.grid_id, state=state, spec=run.spec(stopped=state != "done")
        )
    except history.HistoryError as exc:
        run.history_error = run.history_error or f"The grid's end was not saved: {exc}"


def _unsaved_record(
    result: GenerationResult, backend: Backend, session_id: str, visitor: Visitor
) -> Any:
    """A record that was not saved, for the grid PNG's settings text."""
    from core import history

    return history.new_record(
        result.request,
        seed=result.seeds[0],
        facts=history.environment(backend),
        session_id=session_id,
        duration_seconds=result.generation_seconds,
        owner=visitor.id,
        loras=result.loras,
    )


def _draw(run: _Run, infotext: str, stopped: bool) -> bytes:
    base = run.plan.cells[0].request
    return grid_picture(
        run.plan.x.title,
        run.plan.x.labels,
        run.plan.y.title if run.plan.y is not None else "",
        run.plan.y.labels if run.plan.y is not None else (),
        images=run.images,
        size=(base.width, base.height),
        infotext=infotext,
        spec=run.spec(stopped=stopped),
    )


def _made(run: _Run, **fields: Any) -> GridMade:
    stopped = bool(fields.get("stopped") or fields.get("problem"))
    png = _draw(run, _grid_infotext(run), stopped) if run.first is not None else b""
    return GridMade(
        plan=run.plan,
        grid_id=run.grid_id,
        cells=tuple(run.cells),
        png=png,
        history_error=run.history_error,
        **fields,
    )


def _grid_infotext(run: _Run) -> str:
    from core.grid_image import grid_infotext

    base = run.first.infotext() if run.first is not None else ""
    return grid_infotext(run.plan, base)


def grid_picture(
    x_title: str,
    x_labels: Sequence[str],
    y_title: str,
    y_labels: Sequence[str],
    *,
    images: Sequence[Any],
    size: tuple[int, int],
    infotext: str,
    spec: Mapping[str, Any],
    missing: str = "not run",
) -> bytes:
    """The labelled grid as PNG bytes, with `infotext` (A1111's `parameters`, axes as
    `X Type` / `X Values`) and `spec` (the grid's JSON) in its metadata."""
    from core.grid_image import MAX_GRID_SIDE, draw_grid, grid_png

    columns = max(len(x_labels), 1)
    rows = max(len(y_labels), 1)
    picture = draw_grid(
        images,
        columns=columns,
        rows=rows,
        size=size,
        x_title=x_title,
        x_labels=x_labels,
        y_title=y_title,
        y_labels=y_labels,
        max_side=MAX_GRID_SIDE,
        missing=missing,
    )
    return grid_png(picture, parameters=infotext, record=spec)


def grid_from_cells(
    plan: GridPlan,
    cells: Sequence[GridCellShown | None],
    *,
    grid_id: str = "",
    stopped: bool = True,
) -> GridMade:
    """The grid as far as its cells got (a run that Stop cut short), drawn from the cells'
    PNGs; their settings text comes from the first one's `parameters` chunk."""
    from PIL import Image

    from core.grid_image import grid_infotext
    from core.metadata import MetadataError, read_png_text

    run = _Run(plan, grid_id=grid_id)
    for shown in cells:
        if shown is None:
            continue
        with Image.open(io.BytesIO(shown.png)) as opened:  # our own PNG, made this session
            run.images[shown.index] = opened.convert("RGB")
        run.cells[shown.index] = shown
    first = next((c for c in cells if c is not None), None)
    base = ""
    if first is not None:
        try:
            base = read_png_text(first.png).get("parameters", "")
        except MetadataError:
            base = ""
    infotext = grid_infotext(plan, base)
    return dataclasses.replace(_made(run, stopped=stopped), png=_draw(run, infotext, stopped))


# --- the gallery: a stored grid drawn again ---------------------------------------------------
@dataclass(frozen=True)
class GridPicture:
    """A stored grid drawn again from its cells' records (None cells: deleted or not run)."""

    png: bytes
    state: str
    columns: int
    rows: int
    record_ids: tuple[str | None, ...]
    problem: str | None = None  # why it could not be drawn (our words)


def _labels(axis: Any, count: int) -> tuple[str, list[str]]:
    """An axis's title and labels from a stored spec (outside input): text only, cut."""
    if not isinstance(axis, Mapping):
        return "", [""] * count
    title = str(axis.get("title", ""))[:200]
    raw = axis.get("labels")
    labels = [str(v)[:200] for v in raw] if isinstance(raw, list) else []
    return title, (labels + [""] * count)[:count]


def redraw_grid(store: HistoryStore, grid_id: str) -> GridPicture | None:
    """The grid `grid_id` drawn from its live cells' stored PNGs (None: no such grid)."""
    from core.grid_image import MAX_GRID_SIDE, cell_scale
    from core.history import blobs

    row = store.grids.get(grid_id)
    if row is None:
        return None
    columns, rows = row.columns, row.rows
    if not columns or not rows:
        return GridPicture(b"", row.state, 0, 0, (), "This grid's stored layout is unreadable.")
    x_title, x_labels = _labels(row.spec.get("x"), columns)
    y_title, y_labels = _labels(row.spec.get("y"), rows) if rows > 1 else ("", [])
    images: list[Any] = [None] * (columns * rows)
    ids: list[str | None] = [None] * (columns * rows)
    size = None
    for record in store.grids.cells(grid_id):
        index = record.grid_cell
        if not isinstance(index, int) or not 0 <= index < len(images) or ids[index]:
            continue
        image = store.stored_image(record.id)
        if image.problem is not None:
            continue
        try:
            with blobs.open_checked(image.shown) as opened:
                picture = opened.convert("RGB")
        except (OSError, ValueError, SyntaxError):
            continue  # damaged since it was checked: drawn as missing
        size = size or picture.size
        scale = cell_scale(columns, rows, *size, MAX_GRID_SIDE)
        if scale < 1:  # 36 full-size cells need not all sit in memory at full size
            picture = picture.resize((max(int(size[0] * scale), 1), max(int(size[1] * scale), 1)))
        images[index], ids[index] = picture, record.id
    if size is None:
        return GridPicture(b"", row.state, columns, rows, tuple(ids), "No cell of it is left.")
    infotext = _stored_infotext(store, ids, row)
    png = grid_picture(
        x_title,
        x_labels,
        y_title,
        y_labels,
        images=images,
        size=size,
        infotext=infotext,
        spec=row.spec,
        missing="deleted" if row.state == "done" else "not run",
    )
    return GridPicture(png, row.state, columns, rows, tuple(ids))


def _stored_infotext(store: HistoryStore, ids: Sequence[str | None], row: Any) -> str:
    """The first cell's settings and the stored axes' `X Type` / `X Values` (and Y)."""
    from core.grid_image import a1111_quote

    first = next((store.get(i) for i in ids if i), None)
    base = first.infotext() if first is not None else ""
    fields = []
    for key in ("x", "y"):
        axis = row.spec.get(key)
        if isinstance(axis, Mapping):
            letter = key.upper()
            fields.append(f"{letter} Type: {a1111_quote(str(axis.get('title', ''))[:200])}")
            fields.append(f"{letter} Values: {a1111_quote(str(axis.get('text', ''))[:4000])}")
    return ", ".join([base.rstrip(), *fields]) if base else ", ".join(fields)
