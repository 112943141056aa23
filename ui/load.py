"""The model load on the page: its progress (bytes, speed, time left), Cancel while a
download or read-in runs, a load that another session started, watched without blocking
the page, and what a cancelled load kept."""

from __future__ import annotations

import streamlit as st

from core.generation import Backend, BackendState, LoadProgress
from core.settings import Settings
from core.usecases import LoadOutcome, load_model
from ui.sidebar import refresh_sidebar
from ui.text import for_visitor

# What Cancel stops in each phase where it stops something (LoadProgress.cancellable).
CANCEL_BUTTONS = {
    "downloading": (
        "Cancel download",
        "Stops downloading the model. Files that finished are kept; the next Generate or "
        "Load model now continues from them.",
    ),
    "reading": (
        "Cancel loading",
        "Stops reading the weights into memory. The files stay on disk; the next Generate "
        "or Load model now starts the load again.",
    ),
}


def load_text(backend: Backend, progress: LoadProgress | None = None) -> str:
    """What the load is doing, e.g. "Downloading: 1.2 GB of 16.3 GB · 38 MB/s · 7 min left"."""
    progress = progress or backend.load_progress()
    return progress.text or f"Loading model… {progress.elapsed:.0f} s"


class CancelButton:
    """Cancel for the running load, in a slot of its own: drawn only while a download or
    read-in runs (nothing else can be cancelled, and a generation never is), labelled for
    what it stops, and removed as soon as that is over."""

    def __init__(self, backend: Backend, key: str) -> None:
        self.backend = backend
        self.key = key
        self.slot = st.empty()
        self.drawn = ""  # the phase whose button is drawn now
        self.count = 0  # buttons drawn in this run: each needs a key of its own

    def follow(self, progress: LoadProgress) -> None:
        """Draw, relabel or remove the button for the load's phase now."""
        phase = progress.phase if progress.cancellable else ""
        if phase == self.drawn:
            return
        self.drawn = phase
        if not phase:
            self.slot.empty()
            return
        label, help_text = CANCEL_BUTTONS[phase]
        self.count += 1
        # The click runs `cancel_load` before the next run; that run says "Cancelling…".
        self.slot.button(
            label,
            key=f"{self.key}_{phase}_{self.count}",
            icon=":material/cancel:",
            help=help_text,
            on_click=self.backend.cancel_load,
        )

    def remove(self) -> None:
        self.slot.empty()
        self.drawn = ""


def show_load_error(message: str, settings: Settings) -> None:
    """Why the model could not be loaded, and the fix: an error in plain sight."""
    st.error(for_visitor(message, settings=settings), icon=":material/error:")


def show_cancelled(backend: Backend) -> bool:
    """After a cancelled load: what was kept and what the next click does. Return whether
    the last load was cancelled."""
    progress = backend.load_progress()
    if progress.phase != "cancelled":
        return False
    st.info(progress.text, icon=":material/cancel:")
    return True


def load_with_status(backend: Backend, settings: Settings) -> LoadOutcome:
    """Load the model in the background, showing bytes, speed and time left as it goes.

    Shared by the Generate page (first generation) and the Hardware page (Load model now).
    On success a caption says how long it took; a failure is returned for the page to show
    as an error on the page itself (`show_load_error`), not inside a collapsed box.
    """
    cancel = CancelButton(backend, "cancel_load")
    bar = st.progress(0.0, text=load_text(backend))

    def draw() -> None:
        progress = backend.load_progress()
        cancel.follow(progress)
        bar.progress(progress.fraction, text=load_text(backend, progress))
        refresh_sidebar(backend)

    try:
        outcome = load_model(backend, on_wait=draw)
    finally:  # also when Streamlit stops the run: no Cancel is left behind
        cancel.remove()
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
    progress = backend.load_progress()
    CancelButton(backend, "cancel_running_load").follow(progress)
    st.progress(progress.fraction, text=load_text(backend, progress))
