"""The start of every page: the sign-in gate, the title, the settings and the backend."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core.auth import Visitor
from core.generation import Backend
from core.models import Family, family_for
from core.service import current_settings, get_backend
from core.settings import Settings, SettingsError
from ui.access import require_visitor
from ui.text import for_visitor


@dataclass(frozen=True)
class PageStart:
    """What every page starts from: who is looking, the settings, the shared backend, and
    the model family whose rules apply (with a note when they were guessed)."""

    visitor: Visitor
    settings: Settings
    backend: Backend
    family: Family
    family_note: str = ""  # which family's rules apply and why, when that deserves a word


def start(title: str) -> PageStart:
    """Gate the visitor, draw the page title, read the settings, get the backend and the
    model family (SD_MODEL_FAMILY, else worked out from SD_MODEL).

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
    resolution = family_for(settings)
    return PageStart(
        visitor=visitor,
        settings=settings,
        backend=backend,
        family=resolution.family,
        family_note=resolution.note,
    )
