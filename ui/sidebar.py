"""The sidebar: who is signed in, the model, and its status line, which the pages rewrite
while they load or generate (the sidebar is drawn before the page runs)."""

from __future__ import annotations

import streamlit as st

from core.auth import Visitor
from core.generation import Backend
from core.safe_text import quote
from core.service import current_settings, get_backend
from core.settings import SettingsError
from ui.access import user_box
from ui.text import for_visitor

STATUS_SLOT_KEY = "_sidebar_status_slot"


def status_line(backend: Backend, activity: str = "") -> str:
    """The sidebar's status: state, where it runs, and what it is doing now."""
    facts = backend.describe()
    where = f" on {facts.device} · {facts.dtype}" if facts.device else ""
    doing = activity or facts.activity
    return f"Status: {facts.state}{where}" + (f" · {doing}" if doing else "")


def draw_sidebar_status(backend: Backend) -> None:
    """Draw the status line in a slot the pages can rewrite while they load or generate."""
    slot = st.empty()
    st.session_state[STATUS_SLOT_KEY] = slot
    slot.caption(status_line(backend))


def refresh_sidebar(backend: Backend, activity: str = "") -> None:
    """Rewrite the sidebar status (the sidebar is drawn before the page runs)."""
    slot = st.session_state.get(STATUS_SLOT_KEY)
    if slot is not None:
        slot.caption(status_line(backend, activity))


def draw_sidebar(visitor: Visitor) -> None:
    """The whole sidebar below the page list: user box, model, status, remote service."""
    with st.sidebar:
        user_box(visitor)
        try:
            settings = current_settings()
        except SettingsError as exc:
            st.error(for_visitor(exc))
            return
        # Getting the backend loads nothing and imports no torch: it costs nothing to draw.
        backend = get_backend(settings)
        facts = backend.describe()
        st.caption("Model")
        st.text(for_visitor(settings.model, settings=settings))
        # The demo model's warning is the generator page's banner (once, with what to set).
        draw_sidebar_status(backend)  # the pages rewrite it while they load or generate
        if facts.backend == "remote":
            st.caption(f"Remote: {quote(facts.endpoint or facts.provider, 60)}")
