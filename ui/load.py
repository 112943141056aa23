"""The model load on the page: its progress (bytes, speed, time left), Cancel, and a load
that another session started, watched without blocking the page."""

from __future__ import annotations

import streamlit as st

from core.generation import Backend, BackendState
from core.settings import Settings
from core.usecases import LoadOutcome, load_model
from ui.sidebar import refresh_sidebar
from ui.text import for_visitor


def load_text(backend: Backend) -> str:
    """What the load is doing, e.g. "Downloading: 1.2 GB of 16.3 GB · 38 MB/s · 7 min left"."""
    progress = backend.load_progress()
    return progress.text or f"Loading model… {progress.elapsed:.0f} s"


def cancel_button(backend: Backend) -> None:
    """A Cancel button for the running load; the click is handled before the next run."""
    st.button(
        "Cancel download", key="cancel_load", icon=":material/cancel:", on_click=backend.cancel_load
    )


def show_load_error(message: str, settings: Settings) -> None:
    """Why the model could not be loaded, and the fix: an error in plain sight."""
    st.error(for_visitor(message, settings=settings), icon=":material/error:")


def load_with_status(backend: Backend, settings: Settings) -> LoadOutcome:
    """Load the model in the background, showing bytes, speed and time left as it goes.

    Shared by the Generate page (first generation) and the Hardware page (Load model now).
    On success a caption says how long it took; a failure is returned for the page to show
    as an error on the page itself (`show_load_error`), not inside a collapsed box.
    """
    cancel_button(backend)
    bar = st.progress(0.0, text=load_text(backend))

    def draw() -> None:
        bar.progress(backend.load_progress().fraction, text=load_text(backend))
        refresh_sidebar(backend)

    try:
        outcome = load_model(backend, on_wait=draw)
    finally:
        bar.empty()
    refresh_sidebar(backend)
    if outcome.ok:
        st.caption(
            f"Model loaded in {outcome.seconds:.1f} s, weights read into memory: the first "
            "image runs at full speed."
        )
    return outcome


@st.fragment(run_every=1.0)
def show_running_load(backend: Backend) -> None:
    """Show a load another session (or an earlier page) started, without blocking the page.

    The download runs once per process and survives reloads; this redraws its progress
    every second and reruns the whole page when it ends.
    """
    if backend.state is not BackendState.LOADING:
        st.rerun()  # finished (or failed) since the last draw: show the page as it is now
    cancel_button(backend)
    st.progress(backend.load_progress().fraction, text=load_text(backend))
