"""The Seed history's side of X/Y grids: a cell says which grid it belongs to, and its grid
can be drawn again from the cells' records (deleted cells show as such) and downloaded."""

from __future__ import annotations

import streamlit as st

from core.history import HistoryError, HistoryRecord, HistoryStore
from core.settings import Settings
from core.usecases import redraw_grid
from ui.text import for_visitor

SHOWN_KEY = "gallery_grid"  # the grid id whose picture is open


def _toggle(grid_id: str) -> None:
    state = st.session_state
    state[SHOWN_KEY] = None if state.get(SHOWN_KEY) == grid_id else grid_id


def show_grid_png(png: bytes, grid_id: str, *, key: str) -> None:
    """A grid picture across the page with its download button (on the generator's grid
    section and under a cell in the Seed history; `grid_id` "" for a grid not kept)."""
    st.image(png, width="stretch")
    st.download_button(
        "Download grid PNG",
        data=png,
        file_name=f"sd35-grid-{grid_id[:8] or 'unsaved'}.png",
        mime="image/png",
        key=key,
        icon=":material/download:",
    )


def grid_link(store: HistoryStore, record: HistoryRecord, settings: Settings) -> None:
    """Under a cell's details: which grid it is part of, and that grid on request."""
    if not record.grid_id:
        return
    open_ = st.session_state.get(SHOWN_KEY) == record.grid_id
    st.caption(f"Cell {record.grid_cell + 1} of an X/Y grid")
    st.button(
        "Hide its grid" if open_ else "Show its grid",
        key="gallery_grid_toggle",
        on_click=_toggle,
        args=(record.grid_id,),
        icon=":material/grid_on:",
    )
    if not open_:
        return
    try:
        picture = redraw_grid(store, record.grid_id)
    except HistoryError as exc:
        st.error(for_visitor(exc, settings=settings))
        return
    if picture is None:
        st.info("This grid is no longer in the history.")
        return
    if picture.problem:
        st.warning(picture.problem)
        return
    left = sum(i is not None for i in picture.record_ids)
    st.caption(
        f"{picture.columns} × {picture.rows} grid · {left} of "
        f"{picture.columns * picture.rows} cells in the history · {picture.state}"
    )
    show_grid_png(picture.png, record.grid_id, key="gallery_grid_download")
