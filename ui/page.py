"""The start of every page: the sign-in gate, the title, the settings and the backend."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core.auth import Visitor
from core.generation import Backend
from core.service import current_settings, get_backend
from core.settings import Settings, SettingsError
from ui.access import require_visitor
from ui.text import for_visitor


@dataclass(frozen=True)
class PageStart:
    """What every page starts from: who is looking, the settings, and the shared backend."""

    visitor: Visitor
    settings: Settings
    backend: Backend


def start(title: str) -> PageStart:
    """Gate the visitor, draw the page title, read the settings and get the backend.

    Stops the run after the sign-in screen (not allowed) or a settings error (drawn with
    its fix): the rest of the page needs both.
    """
    visitor = require_visitor()
    st.title(title)
    try:
        settings = current_settings()
        backend = get_backend(settings)
    except SettingsError as exc:
        st.error(for_visitor(exc))
        st.stop()
    return PageStart(visitor=visitor, settings=settings, backend=backend)
