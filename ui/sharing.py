"""Gallery pieces for a shared app: the Mine/Everyone filter, who made an image, and the
admins' panel (deleted images with Restore, the audit trail).

Emails, names and prompts are visitor input: drawn with `st.text` / `st.dataframe` (plain
text), never markdown.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from core.auth import LOCAL_USER, Visitor
from core.history import RESTORE_DAYS, HistoryError, HistoryStore
from core.settings import Settings
from ui.text import for_visitor

WHOSE_KEY = "gallery_whose"
EVERYONE, MINE = "Everyone", "Mine"
RESTORE_ERROR_KEY = "gallery_restore_error"


def owner_label(owner: str | None) -> str:
    return "local user" if (owner or LOCAL_USER) == LOCAL_USER else str(owner)


def whose_filter(container: Any, on_change: Any = None) -> bool:
    """The Mine / Everyone control; return True for Mine."""
    choice = container.segmented_control(
        "Made by", [EVERYONE, MINE], key=WHOSE_KEY, default=EVERYONE, on_change=on_change
    )
    return choice == MINE


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(at)) + " UTC"


def _restore(store: HistoryStore, visitor: Visitor, record_id: str, settings: Settings) -> None:
    try:
        restored = store.restore(record_id, actor=visitor.id, admin=visitor.is_admin)
    except HistoryError as exc:
        st.session_state[RESTORE_ERROR_KEY] = for_visitor(exc, settings=settings)
        return
    st.toast("Restored." if restored else "Already restored or purged.")


def _deleted(store: HistoryStore, visitor: Visitor, settings: Settings, deleted: list) -> None:
    with st.expander(
        f"Deleted images ({len(deleted)}) · admins can restore for {RESTORE_DAYS} days"
    ):
        if not deleted:
            st.caption("Nothing deleted recently.")
        for item in deleted:
            record = item.record
            text, button = st.columns([5, 1], vertical_alignment="center")
            text.text(
                f"Seed {record.seed} · by {owner_label(record.owner)} · deleted by "
                f"{owner_label(item.deleted_by)} {_when(item.deleted_at)} · purged after "
                f"{_when(item.purge_at)}\n{' '.join(record.prompt.split())[:120]}"
            )
            button.button(
                "Restore",
                key=f"restore_{record.id}",
                on_click=_restore,
                args=(store, visitor, record.id, settings),
            )


def admin_panel(store: HistoryStore, visitor: Visitor, settings: Settings) -> None:
    """For admins: images deleted in the last days (Restore) and the audit trail.

    `settings` lets error messages hide server paths from remote visitors (`for_visitor`).
    """
    if not visitor.is_admin:
        return
    error = st.session_state.pop(RESTORE_ERROR_KEY, None)
    if error:
        st.error(error)
    try:
        deleted = store.deleted()
        trail = store.audit_trail()
    except HistoryError:
        # The page's own read of the history says what is wrong, once (one box, not two).
        st.caption("Deleted images and the audit trail cannot be read now.")
        return
    if not deleted and not trail:
        return  # nothing to show yet (and no clutter for the local dashboard's one user)
    _deleted(store, visitor, settings, deleted)
    with st.expander(f"Audit trail ({len(trail)} latest: deletes, restores, purges)"):
        st.dataframe(
            {
                "when (UTC)": [_when(e.at) for e in trail],
                "who": [owner_label(e.actor) for e in trail],
                "what": [e.action for e in trail],
                "image of": [owner_label(e.owner) for e in trail],
                "prompt": [e.detail or "" for e in trail],
                "record": [e.record_id for e in trail],
            },
            hide_index=True,
        )
