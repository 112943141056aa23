"""The generator's X/Y grid: the axes and their values, the cell count before the click, the
run (Stop, progress per cell, the cells as they finish) and the labelled grid to download.

The cells are ordinary Seed history records of their grid (`core.usecases.grid`): each one
can be opened there, varied, verified or shared like any image. A Stop keeps the finished
cells: they are kept in the history as they land, and this session keeps their PNGs until
the grid is drawn, so the grid shows what ran with "not run" in the other cells.
"""

from __future__ import annotations

import dataclasses

import streamlit as st

from core import form
from core.generation import Backend, InvalidRequest, Progress, random_seed
from core.grid import AXES, GridPlan
from core.modes import DEFAULT_MODE, MODES, get_mode
from core.progress_text import progress_text
from core.safe_text import plural, quote
from core.settings import Settings
from core.usecases import (
    GridCellShown,
    GridMade,
    PlannedGrid,
    generate_grid_and_keep,
    plan_from_form,
)
from core.usecases.grid import grid_from_cells
from ui import workbench
from ui.gallery_grid import show_grid_png
from ui.load import load_with_status, show_load_error
from ui.loras import HUB_KEY
from ui.page import PageStart
from ui.sidebar import refresh_sidebar
from ui.text import for_visitor

RESULT_KEY = "grid_result"  # the last grid (GridMade without its cells' PNGs)
RUNNING_KEY = "grid_running"  # (plan, cells so far): what a Stop leaves to draw
GALLERY_SELECTED = "gallery_selected"  # ui.gallery.SELECTED: the record the gallery opens
GALLERY = "pages/gallery.py"
NO_AXIS = ""
MODE_IDS = {mode.id for mode in MODES}
EXAMPLES = {
    "seed": "1, 2, 3  or  1-4",
    "guidance": "3, 4.5, 6",
    "steps": "20-40 (+10)",
    "slg": "off, on  or  off, 2, 2.8",
    "strength": "0.3, 0.5, 0.7",
    "lora_weight": "0, 0.5, 1",
    "prompt_sr": "red, blue, green  (the first is searched in the prompt)",
}


def _kinds() -> list[str]:
    """The axes for the form's mode: Strength only where the mode has one (Vary, Upscale)."""
    mode = st.session_state.get("mode", DEFAULT_MODE.id)
    strength = mode in MODE_IDS and get_mode(mode).option("strength") is not None
    return [kind for kind in AXES if kind != "strength" or strength]


def _label(kind: str) -> str:
    return "None" if kind == NO_AXIS else AXES[kind].label


def _axis(which: str, kinds: list[str], lora_names: tuple[str, ...]) -> tuple[str, str, str]:
    """One axis's choice, values and (for a LoRA weight axis) LoRA; keys grid_x_*/grid_y_*."""
    state, key = st.session_state, f"grid_{which.lower()}"
    kind_column, values_column = st.columns([2, 3], vertical_alignment="bottom")
    kind = kind_column.selectbox(f"{which} axis", kinds, key=f"{key}_kind", format_func=_label)
    text = values_column.text_input(
        f"{which} values",
        key=f"{key}_text",
        disabled=kind == NO_AXIS,
        placeholder=EXAMPLES.get(kind, ""),
        max_chars=4000,
    )
    lora = ""
    if kind == "lora_weight":
        if state.get(f"{key}_lora") not in lora_names:
            state.pop(f"{key}_lora", None)
        lora = st.selectbox(f"LoRA of the {which} axis", lora_names, key=f"{key}_lora") or ""
    return kind, ("" if kind == NO_AXIS else text), lora


def _plan(start: PageStart, *, clicked: bool) -> PlannedGrid:
    """The grid as typed, checked: with the form's seed, or a new one at the click when
    the form asks for a random seed."""
    state = st.session_state
    # The folder's LoRAs and the Hub LoRAs picked in the LoRAs section (ui.loras).
    lora_names = (*start.backend.loras().names, *state.get(HUB_KEY, []))
    kinds = _kinds()
    x_kind, x_text, x_lora = _axis("X", kinds, lora_names)
    y_kind, y_text, y_lora = _axis("Y", [NO_AXIS, *kinds], lora_names)
    if not x_text.strip():
        return PlannedGrid()
    seed = random_seed() if clicked and state.get("randomize_seed") else int(state.seed)
    try:
        base = form.build_request(state, seed=seed, family=start.family.id, **workbench.inputs())
    except InvalidRequest as exc:
        return PlannedGrid(problem=str(exc))
    return plan_from_form(
        base,
        settings=start.settings,
        visitor=start.visitor,
        x_kind=x_kind,
        x_text=x_text,
        y_kind=y_kind if y_text.strip() else None,
        y_text=y_text,
        x_lora=x_lora,
        y_lora=y_lora,
    )


def section(start: PageStart) -> GridPlan | None:
    """The "X/Y grid" section; return the checked plan when "Generate grid" was clicked."""
    in_use = bool(st.session_state.get("grid_x_text"))  # stays open once values are typed
    with st.expander("X/Y grid", icon=":material/grid_on:", expanded=in_use):
        st.caption(
            "Compare settings: each cell is one image of the form's settings with the axes' "
            "values applied. Lists: 3, 4.5, 6 · ranges: 20-40 (+10) or 1-10 [4]."
        )
        clicked = st.session_state.get("grid_generate", False)
        planned = _plan(start, clicked=clicked)
        plan = planned.plan
        if planned.problem:
            st.warning(for_visitor(planned.problem, settings=start.settings))
        elif plan is not None:
            size = f"{plan.columns} × {plan.rows} = " if plan.rows > 1 else ""
            st.caption(f"{size}{plural(plan.count, 'cell')} · {plural(plan.count, 'image')}")
            for note in plan.notes:
                st.caption(note)
        st.button(
            "Generate grid",
            key="grid_generate",
            type="primary",
            disabled=plan is None,
            help="One image per cell, each kept in the Seed history as it finishes.",
        )
    return plan if clicked else None


class GridProgress:
    """Stop, the grid's progress bar (cell k of n, its step) and the cells as they land."""

    def __init__(self, backend: Backend, plan: GridPlan) -> None:
        self.backend, self.plan = backend, plan
        self.bar = self.cells_slot = None
        self.done: list[GridCellShown | None] = [None] * plan.count

    def start(self) -> None:
        st.button("Stop", key="grid_stop", icon=":material/stop_circle:")
        self.bar = st.progress(0.0, text="Queued…")
        self.cells_slot = st.empty()
        st.session_state[RUNNING_KEY] = (self.plan, self.done)

    def update(self, cell: object, p: Progress) -> None:
        finished = sum(c is not None for c in self.done)
        fraction = min((finished + p.fraction) / self.plan.count, 1.0)
        # The labels hold prompt text (S/R): code spans, never markdown.
        where = " · ".join(quote(label, 40) for label in (cell.x_label, cell.y_label) if label)
        text = f"Cell {cell.index + 1} of {self.plan.count} ({where}) · {progress_text(p)}"
        self.bar.progress(fraction, text=text[:200])
        refresh_sidebar(self.backend, f"grid · cell {cell.index + 1}/{self.plan.count}")

    def cell(self, shown: GridCellShown) -> None:
        """A cell landed (and is kept): show every finished cell in its place."""
        self.done[shown.index] = shown
        with self.cells_slot.container():
            columns = st.columns(min(self.plan.columns, 6))
            for cell in self.plan.cells:
                got = self.done[cell.index]
                if got is not None:
                    with columns[cell.column % len(columns)]:
                        st.image(got.png, width="stretch")
                        st.text(" · ".join(x for x in (cell.x_label, cell.y_label) if x)[:80])

    def clear(self) -> None:
        st.session_state.pop(RUNNING_KEY, None)
        if self.bar is not None:
            self.bar.empty()
            self.cells_slot.empty()


def _light(made: GridMade) -> GridMade:
    """The grid without its cells' PNGs (they are in the history): what the session keeps."""
    cells = tuple(None if c is None else dataclasses.replace(c, png=b"") for c in made.cells)
    return dataclasses.replace(made, cells=cells)


def run(start: PageStart, plan: GridPlan, *, result_key: str) -> None:
    """The "Generate grid" click: run it, keep it, then show it (the page runs again)."""
    from core.history import session_id  # the first grid pays for this import

    settings, state = start.settings, st.session_state
    progress = GridProgress(start.backend, plan)
    outcome = generate_grid_and_keep(
        plan,
        settings=settings,
        visitor=start.visitor,
        backend=start.backend,
        session_id=session_id(state),
        load=lambda b: load_with_status(b, settings),
        on_start=progress.start,
        on_progress=progress.update,
        on_cell=progress.cell,
    )
    progress.clear()
    if outcome.made is None:
        if outcome.failed_at == "load":
            show_load_error(outcome.problem, settings)
        else:
            st.error(for_visitor(outcome.problem, settings=settings))
        return
    state.pop(result_key, None)  # the grid takes the output's place
    state[RESULT_KEY] = _light(outcome.made)
    st.rerun()


def forget() -> None:
    """A new Generate click: its images take the output's place."""
    st.session_state.pop(RESULT_KEY, None)


def shown(settings: Settings) -> bool:
    """Show the last grid (or the part a Stop left); return whether there was one."""
    state = st.session_state
    running = state.pop(RUNNING_KEY, None)
    if running is not None:  # Stop ended the last run: draw what it finished
        plan, cells = running
        state[RESULT_KEY] = _light(grid_from_cells(plan, cells, stopped=True))
    made = state.get(RESULT_KEY)
    if made is None:
        return False
    _show(made, settings)
    return True


def _show(made: GridMade, settings: Settings) -> None:
    count = made.plan.count
    if made.cancelled:
        st.warning(made.cancelled)
    if made.problem:
        st.error(for_visitor(made.problem, settings=settings))
    if made.stopped or made.problem:
        st.warning(
            f"Stopped after {made.done} of {count} cells. The finished cells are kept in "
            "the Seed history; the others show as not run."
        )
    else:
        st.success(f"Grid · {plural(count, 'cell')} · {made.seconds:.1f} s")
    if made.history_error:
        st.warning(for_visitor(made.history_error, settings=settings), icon=":material/save:")
    if not made.png:
        return
    show_grid_png(made.png, made.grid_id, key="grid_download")
    _open_cell(made)


def _open_cell(made: GridMade) -> None:
    """Open one cell's record in the Seed history (vary, verify, share it there)."""
    kept = [c for c in made.cells if c is not None and c.record_id]
    if not kept:
        return
    cells = made.plan.cells

    def name(shown: GridCellShown) -> str:
        cell = cells[shown.index]
        where = " · ".join(x for x in (cell.x_label, cell.y_label) if x)
        return f"Cell {shown.index + 1} · {where[:60]} · seed {shown.seed}"

    pick, go = st.columns([3, 1], vertical_alignment="bottom")
    chosen = pick.selectbox("A cell in the Seed history", kept, format_func=name, key="grid_cell")
    if go.button("Open", key="grid_open_cell") and chosen is not None:
        st.session_state[GALLERY_SELECTED] = chosen.record_id
        st.switch_page(GALLERY)
