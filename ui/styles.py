"""The generator's styles: pick styles for the prompt, apply them into the prompt boxes,
save the prompt as a style, and manage them (delete, publish, A1111 styles.csv in and out).

A style is a prompt template with `{prompt}` (core.styles); the chosen ones are merged into
the prompts when the request is built (`core.form.build_request`) and recorded with the
image. Styles live in the history database (`store.styles`): each person's own, plus the
ones an admin published. Names and templates are visitor input: drawn as plain text.
"""

from __future__ import annotations

import streamlit as st

from core import form, history
from core.auth import Visitor
from core.history import HistoryError, SavedStyle
from core.safe_text import plural, quote
from core.settings import Settings
from core.styles import Style, StyleError, export_csv, import_csv
from ui.sharing import owner_label
from ui.text import for_visitor

FIELD = "styles"  # the form field and the multiselect's key: the chosen names
MANAGE_KEY = "style_manage"
NAME_KEY = "style_new_name"
UPLOAD_KEY = "style_upload"
MESSAGE_KEY = "style_message"  # (kind, text) to show once after an action


def _say(kind: str, text: str) -> None:
    st.session_state[MESSAGE_KEY] = (kind, text)


def _store(settings: Settings) -> history.HistoryStore:
    return history.open_store(settings)


def _visible(settings: Settings, visitor: Visitor) -> tuple[list[SavedStyle], str | None]:
    try:
        return _store(settings).styles.visible(visitor.id), None
    except HistoryError as exc:
        return [], for_visitor(f"Styles cannot be read now: {exc}", settings=settings)


def _apply_to_prompt() -> None:
    """A1111's "apply styles" button: the chosen styles go into the prompt boxes."""
    state = st.session_state
    state.prompt, state.negative_prompt, _ = form.apply_chosen_styles(state)
    state[FIELD] = []


def _save(settings: Settings, visitor: Visitor) -> None:
    state = st.session_state
    try:
        style = Style(state.get(NAME_KEY, "").strip(), state.prompt, state.negative_prompt)
        _store(settings).styles.save(visitor.id, style)
    except (StyleError, HistoryError) as exc:
        _say("error", for_visitor(exc, settings=settings))
        return
    state[NAME_KEY] = ""
    _say("success", f"Saved the prompt as the style {quote(style.name, 60)}.")


def _delete(settings: Settings, visitor: Visitor, saved: SavedStyle) -> None:
    try:
        _store(settings).styles.delete(
            saved.owner, saved.name, actor=visitor.id, admin=visitor.is_admin
        )
    except HistoryError as exc:
        _say("error", for_visitor(exc, settings=settings))
        return
    _say("success", f"Deleted the style {quote(saved.name, 60)}.")


def _publish(settings: Settings, visitor: Visitor, saved: SavedStyle) -> None:
    try:
        _store(settings).styles.publish(
            saved.owner, saved.name, shared=not saved.shared, actor=visitor.id, admin=True
        )
    except HistoryError as exc:
        _say("error", for_visitor(exc, settings=settings))
        return
    done = "Withdrew" if saved.shared else "Published"
    _say("success", f"{done} the style {quote(saved.name, 60)}.")


def _import(settings: Settings, visitor: Visitor) -> None:
    upload = st.session_state.get(UPLOAD_KEY)
    if upload is None:
        return
    try:
        read = import_csv(upload.getvalue())
        written = _store(settings).styles.save_many(visitor.id, read.styles)
    except (StyleError, HistoryError) as exc:
        _say("error", for_visitor(exc, settings=settings))
        return
    skipped = f" Left out: {'; '.join(read.skipped[:5])}." if read.skipped else ""
    _say("success", f"Imported {plural(written, 'style')} as yours.{skipped}")


def picker(settings: Settings, visitor: Visitor) -> None:
    """Choose styles for the prompt (merged when generating), or apply them into it."""
    state = st.session_state
    saved, problem = _visible(settings, visitor)
    state[form.STYLE_TEMPLATES] = {s.name: (s.style.prompt, s.style.negative_prompt) for s in saved}
    names = [s.name for s in saved]
    state[FIELD] = [name for name in state.get(FIELD, ()) if name in names]
    choose, apply = st.columns([3, 1], vertical_alignment="bottom")
    choose.multiselect(
        "Styles",
        names,
        key=FIELD,
        placeholder="No style" if names else "No styles yet: save one under Manage styles",
        help="Merged into the prompt when you generate: {prompt} in a style is your prompt.",
    )
    apply.button(
        "Apply",
        key="style_apply",
        on_click=_apply_to_prompt,
        disabled=not state[FIELD],
        help="Apply to the prompt: put the chosen styles into the prompt boxes and clear "
        "the choice.",
    )
    if state[FIELD]:
        prompt, _, _ = form.apply_chosen_styles(state)
        st.caption("Prompt with the styles")
        st.text(prompt if len(prompt) < 300 else prompt[:299] + "…")
    _manage(settings, visitor, saved, problem)


def _manage(
    settings: Settings, visitor: Visitor, saved: list[SavedStyle], problem: str | None
) -> None:
    """Save the prompt as a style; delete, publish (admins) and move styles as styles.csv."""
    state = st.session_state
    with st.expander("Manage styles", icon=":material/style:"):
        message = state.pop(MESSAGE_KEY, None)
        if message is not None:
            (st.error if message[0] == "error" else st.success)(message[1])
        if problem:
            st.warning(problem)
        name, save = st.columns([3, 2], vertical_alignment="bottom")
        name.text_input("Style name", key=NAME_KEY, max_chars=100)
        save.button(
            "Save prompt as style",
            key="style_save",
            on_click=_save,
            args=(settings, visitor),
            help="The prompt and negative prompt as they are now; {prompt} marks where a "
            "later prompt goes.",
        )
        if saved:
            _one_style(settings, visitor, saved)
        upload, download = st.columns(2, vertical_alignment="bottom")
        upload.file_uploader("Import A1111 styles.csv", type=["csv"], key=UPLOAD_KEY)
        if state.get(UPLOAD_KEY) is not None:
            upload.button("Import", key="style_import", on_click=_import, args=(settings, visitor))
        download.download_button(
            "Export styles.csv",
            data=export_csv([s.style for s in saved]),
            file_name="styles.csv",
            mime="text/csv",
            key="style_export",
            disabled=not saved,
            help="The styles you see, in A1111's styles.csv format.",
        )


def _one_style(settings: Settings, visitor: Visitor, saved: list[SavedStyle]) -> None:
    """Pick one style: its text, whose it is, and what this visitor may do with it."""
    by_name = {s.name: s for s in saved}
    if st.session_state.get(MANAGE_KEY) not in by_name:
        st.session_state[MANAGE_KEY] = saved[0].name
    chosen = by_name[st.selectbox("Style", list(by_name), key=MANAGE_KEY)]
    whose = "yours" if chosen.owner == visitor.id else f"by {owner_label(chosen.owner)}"
    st.text(f"{'Published to everyone' if chosen.shared else 'Private'} · {whose}")
    st.code(chosen.style.prompt or " ", language=None, wrap_lines=True)
    if chosen.style.negative_prompt:
        st.code(chosen.style.negative_prompt, language=None, wrap_lines=True)
    delete, publish = st.columns(2)
    if visitor.id == chosen.owner or visitor.is_admin:
        delete.button(
            "Delete style",
            key="style_delete",
            on_click=_delete,
            args=(settings, visitor, chosen),
        )
    if visitor.is_admin:
        publish.button(
            "Withdraw from everyone" if chosen.shared else "Publish to everyone",
            key="style_publish",
            on_click=_publish,
            args=(settings, visitor, chosen),
        )
