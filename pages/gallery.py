"""Seed history: every image made here, searchable, and reproducible bit for bit."""

import streamlit as st

from core import history
from core.generation import MAX_SEED
from core.history import HistoryError
from core.safe_text import plural
from ui import gallery, page
from ui.sharing import admin_panel, whose_filter
from ui.text import for_visitor

state = st.session_state
PAGE = "gallery_page"
LABEL_PX = 20  # a widget label with its margin: the toggle lines up with the fields


def _first_page() -> None:
    # A filter changed: the old page number may be past the end of the new results.
    state[PAGE] = 1


def _pager(page_number: int, pages: int) -> None:
    """← Newer · Page n of m · Older →"""
    back, where, forward = st.columns([1, 2, 1])
    back.button(
        "← Newer",
        key="page_prev",
        disabled=page_number <= 1,
        on_click=state.__setitem__,
        args=(PAGE, page_number - 1),
    )
    where.caption(f"Page {page_number} of {pages}")
    forward.button(
        "Older →",
        key="page_next",
        disabled=page_number >= pages,
        on_click=state.__setitem__,
        args=(PAGE, page_number + 1),
    )


start = page.start("Seed history")
settings, visitor = start.settings, start.visitor
try:
    store = history.open_store(settings)
except HistoryError as exc:
    # A HistoryError names the data folder: hidden from remote visitors.
    st.error(for_visitor(exc, settings=settings))
    st.stop()
if store.read_only is not None:
    st.warning(
        "This history is read-only: every record is shown, but new images cannot be saved "
        "here and nothing can be deleted. The reason:"
    )
    st.code(for_visitor(store.read_only, settings=settings), language=None, wrap_lines=True)
session = history.session_id(state)

selected = state.get(gallery.SELECTED)
record = store.get(selected) if selected else None
if record is not None:
    gallery.details(store, record, visitor=visitor, settings=settings, backend=start.backend)

gallery.import_png(start.family, start.backend)
admin_panel(store, visitor, settings)

# Labels in one line at the top; the toggle, which has none, steps down to the fields.
search, seed_box, whose, mine = st.columns([3, 2, 2, 2], vertical_alignment="top")
mine.space(LABEL_PX)
text = search.text_input("Search prompts", key="gallery_search", on_change=_first_page)
seed = seed_box.number_input(
    "Seed", 0, MAX_SEED, value=None, step=1, key="gallery_seed", on_change=_first_page
)
only_mine = mine.toggle("This session only", key="gallery_mine", on_change=_first_page)
made_by_me = whose_filter(whose, on_change=_first_page)

try:
    found = store.page(
        state.get(PAGE, 1),
        text=text.strip() or None,
        seed=None if seed is None else int(seed),
        session_id=session if only_mine else None,
        owner=visitor.id if made_by_me else None,
    )
except HistoryError as exc:
    st.error(for_visitor(exc, settings=settings))
    st.stop()
state[PAGE] = found.page

st.caption(f"{plural(found.total, 'image')} · page {found.page} of {found.pages}")
gallery.grid(store, found)
gallery.download_all(store, store.count())
if found.pages > 1:
    _pager(found.page, found.pages)
