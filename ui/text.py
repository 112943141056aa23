"""Outside text for this visitor: `core.safe_text`'s pure rules, with the visitor supplied.

Whether server paths may be shown depends on who is looking (`SD_SHOW_PATHS=auto`: only a
visitor on this machine); Streamlit knows their address (`st.context.ip_address`), so the
deciding happens here and `core.safe_text` stays plain Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import streamlit as st

from core import safe_text
from core.settings import Settings


def visitor_ip() -> str | None:
    """The address of the visitor running this script; None on loopback or outside a run."""
    try:
        ip = st.context.ip_address
    except Exception:  # noqa: BLE001 - outside a script run there is no visitor: local use
        return None
    return ip if isinstance(ip, str) else None  # AppTest has no real client: local use


def paths_visible(settings: Settings | None = None) -> bool:
    """Whether this visitor may see server paths (SD_SHOW_PATHS and their address)."""
    setting = settings.show_paths if settings is not None else None
    return safe_text.paths_visible(visitor_ip(), setting=setting)


def for_visitor(
    text: object,
    *,
    settings: Settings | None = None,
    paths: Mapping[str, str | Path | None] | None = None,
) -> str:
    """A message about to be shown to this visitor: server paths replaced unless they may
    see them (`core.safe_text.for_visitor`). Every message a page shows goes through it."""
    return safe_text.for_visitor(
        text, settings=settings, paths=paths, visible=paths_visible(settings)
    )
