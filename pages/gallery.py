"""Seed history: every image made here, searchable, and reproducible bit for bit.

Prompts are user text: they are drawn with `st.text` / `st.code` (never markdown), so a
prompt holding HTML or markdown shows as typed.
"""

import dataclasses
import logging

import streamlit as st

from core import form, history, metadata, share
from core.access import daily_allowance, require_visitor
from core.device import DeviceError
from core.generation import MAX_SEED, GenerationError
from core.history import HistoryError
from core.models import family_for
from core.safe_text import for_visitor, format_field, plural
from core.service import current_settings, get_backend
from core.settings import SettingsError
from core.sharing_ui import admin_panel, owner_label, whose_filter

log = logging.getLogger(__name__)
state = st.session_state
SELECTED = "gallery_selected"
PAGE = "gallery_page"
CONFIRM_DELETE = "gallery_confirm_delete"
COLUMNS = 4
GENERATOR = "pages/generate.py"


def _first_page() -> None:
    # A filter changed: the old page number may be past the end of the new results.
    state[PAGE] = 1


def _select(record_id: str | None) -> None:
    state[SELECTED] = record_id
    state.pop(CONFIRM_DELETE, None)


def _use_settings(values: dict) -> None:
    form.hand_over(state, values)
    st.switch_page(GENERATOR)


def _base_url() -> str:
    url = getattr(st.context, "url", None) or "http://localhost:8501"
    return url.split("?", 1)[0].rsplit("/", 1)[0] if url.count("/") > 2 else url


def _excerpt(text: str, limit: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _refuse_invalid(record) -> bool:
    """Say why a stored record cannot be used as settings; True when it cannot.

    Rows are outside input (an edited database, another app version): they are checked
    exactly like a shared link before they reach a widget or the pipeline.
    """
    problems = record.problems()
    if problems:
        st.error(
            "This record holds settings the generator cannot use, so nothing was run or "
            "changed. The stored image and its download are unaffected."
        )
        st.code("\n".join(problems), language=None, wrap_lines=True)
    return bool(problems)


def _verify(store, record) -> None:
    if _refuse_invalid(record):
        return
    _, over_limit = daily_allowance(settings, visitor)  # a regeneration is spent like any image
    if over_limit is not None:
        st.error(over_limit)
        return
    try:
        backend = get_backend(settings)
        with st.spinner("Loading the model…"):
            backend.ensure_loaded()
        differences = history.environment_differences(record, history.environment(backend))
        if "remote" in (record.backend, backend.name):
            st.info(
                "A remote inference service does not guarantee identical pixels for the same "
                "seed (its hardware, versions and batching are not ours to pin), so a "
                "difference here is not necessarily an error."
            )
        if differences:
            st.warning("This image was made in a different setup, so pixels may differ:")
            st.text("\n".join(differences))  # recorded values: plain text, never markup
        with st.spinner("Regenerating…"):
            outcome = history.verify(store, record, backend)
    except (GenerationError, DeviceError) as exc:
        st.error(for_visitor(exc, settings=settings))
        return
    if settings.daily_limit:
        try:
            store.note_regenerate(visitor.id, record)
        except HistoryError as exc:
            log.warning("regeneration not counted: %s", exc)
    (st.success if outcome.identical else st.warning)(
        f"Regenerated: {for_visitor(outcome.message, settings=settings)}"
    )
    st.image(outcome.png, caption="Regenerated now", width=256)


def _details(store, record) -> None:
    with st.container(border=True, key="details"):
        top = st.columns([1, 2])
        with top[0]:
            image = store.stored_image(record.id)  # one read of the PNG for all three uses
            st.image(image.shown, width="stretch")
            if image.problem:
                st.warning(image.problem)
        with top[1]:
            st.caption("Prompt")
            st.code(record.prompt or " ", language=None, wrap_lines=True)
            st.caption("Negative prompt")
            st.code(record.negative_prompt or " ", language=None, wrap_lines=True)
            fields = {
                k: v
                for k, v in dataclasses.asdict(record).items()
                if k not in ("prompt", "negative_prompt")
            }
            fields = {k: format_field(k, v) for k, v in fields.items()}
            fields["created_at"] = history.format_time(record.created_at)
            width = max(len(k) for k in fields)
            st.caption("Everything recorded")
            # st.code shows plain text: nothing recorded can inject markup.
            st.code(
                "\n".join(f"{k.ljust(width)}  {v}" for k, v in fields.items()),
                language=None,
                wrap_lines=True,
            )
            st.caption("Shareable link (opens the generator with these settings)")
            st.code(share.share_link(record.form_values(), _base_url()), language=None)
        actions = st.columns(5)
        use = actions[0].button("Use these settings", key="use_settings", type="primary")
        verify = actions[1].button("Regenerate & verify", key="verify")
        png = image.png
        actions[2].download_button(
            "Download PNG",
            data=png or b"",
            file_name=f"sd35-{record.seed}-{record.id[:8]}.png",
            mime="image/png",
            key="download_original",
            disabled=png is None,
        )
        # Only the owner or an admin is offered Delete (and the store refuses anyone else).
        if visitor.may_delete(record.owner) and actions[3].button(
            "Delete", key="delete", disabled=store.read_only is not None
        ):
            state[CONFIRM_DELETE] = record.id
        actions[4].button("Close", key="close", on_click=_select, args=(None,))
        if state.get(CONFIRM_DELETE) == record.id:
            st.warning(
                "Delete this image? It disappears for everyone; an admin can restore it "
                f"for {history.RESTORE_DAYS} days, then it is gone for good."
            )
            yes, no = st.columns(2)
            if yes.button("Yes, delete", key="confirm_delete", type="primary"):
                try:
                    store.delete(record.id, actor=visitor.id, admin=visitor.is_admin)
                except HistoryError as exc:
                    st.error(for_visitor(exc, settings=settings))
                else:
                    _select(None)
                    st.rerun()
            no.button("Cancel", key="cancel_delete", on_click=state.pop, args=(CONFIRM_DELETE,))
        if use and not _refuse_invalid(record):
            _use_settings(record.form_values())
        if verify:
            _verify(store, record)


def _import() -> None:
    with st.expander("Import settings from a PNG"):
        upload = st.file_uploader(
            "PNG from this app, A1111, Forge, Fooocus or SD.Next", type=None, key="import_png"
        )
        if upload is None:
            return
        if upload.size > metadata.MAX_IMPORT_BYTES:
            st.error(
                f"The file is {upload.size / 1e6:.1f} MB; the limit is "
                f"{metadata.MAX_IMPORT_BYTES // 2**20} MB."
            )
            return
        try:
            parsed = metadata.parameters_from_png(upload.getvalue())
        except metadata.MetadataError as exc:
            st.error(str(exc))  # our words; anything from the file in it is quoted
            return
        values, warnings = share.check_values(parsed.values, family=family_for(settings).family)
        for warning in warnings:
            st.warning(warning)
        st.caption("Prompt")
        st.code(values.get("prompt") or " ", language=None, wrap_lines=True)
        shown = {k: v for k, v in values.items() if k != "prompt"} | parsed.extras
        st.dataframe(
            {"field": list(shown), "value": [str(v) for v in shown.values()]},
            hide_index=True,
        )
        if st.button("Use these settings", key="import_use", type="primary"):
            _use_settings(values)


def _download_all(store, total: int) -> None:
    from core.history import export

    st.download_button(
        f"Download the whole history ({plural(total, 'image')}, zip)",
        # A callable runs only when clicked, on its own thread: no zip on every rerun.
        data=lambda: export.zip_bytes(store),
        file_name="seed-history.zip",
        mime="application/zip",
        key="download_all",
        icon=":material/folder_zip:",
        disabled=total == 0,
        help="Every image as stored (PNG with its settings chunks) and metadata.jsonl.",
    )


def _grid(store, page) -> None:
    if not page.records:
        st.info("Nothing here yet. Images you generate are saved here automatically.")
        return
    thumbnails = store.thumbnails([record.id for record in page.records])  # one query
    for start in range(0, len(page.records), COLUMNS):
        for column, record in zip(
            st.columns(COLUMNS), page.records[start : start + COLUMNS], strict=False
        ):
            with column.container(border=True):
                st.image(thumbnails[record.id], width="stretch")
                st.text(f"Seed {record.seed} · {record.width}×{record.height}")
                st.text(_excerpt(record.prompt) or "(no prompt)")
                st.text(f"by {owner_label(record.owner)}")
                st.button("Details", key=f"open_{record.id}", on_click=_select, args=(record.id,))


visitor = require_visitor()
st.title("Seed history")
try:
    settings = current_settings()
    store = history.open_store(settings)
except (SettingsError, HistoryError) as exc:
    # A HistoryError names the data folder: hidden from remote visitors (settings exist then).
    st.error(for_visitor(exc, settings=globals().get("settings")))
    st.stop()
if store.read_only is not None:
    st.warning(
        "This history is read-only: every record is shown, but new images cannot be saved "
        "here and nothing can be deleted. The reason:"
    )
    st.code(for_visitor(store.read_only, settings=settings), language=None, wrap_lines=True)
session = history.session_id(state)

selected = state.get(SELECTED)
record = store.get(selected) if selected else None
if record is not None:
    _details(store, record)

_import()
admin_panel(store, visitor, settings)

search, seed_box, whose, mine = st.columns([3, 2, 2, 2], vertical_alignment="bottom")
text = search.text_input("Search prompts", key="gallery_search", on_change=_first_page)
seed = seed_box.number_input(
    "Seed", 0, MAX_SEED, value=None, step=1, key="gallery_seed", on_change=_first_page
)
only_mine = mine.toggle("This session only", key="gallery_mine", on_change=_first_page)
made_by_me = whose_filter(whose, on_change=_first_page)

try:
    page = store.page(
        state.get(PAGE, 1),
        text=text.strip() or None,
        seed=None if seed is None else int(seed),
        session_id=session if only_mine else None,
        owner=visitor.id if made_by_me else None,
    )
except HistoryError as exc:
    st.error(for_visitor(exc, settings=settings))
    st.stop()
state[PAGE] = page.page

st.caption(f"{plural(page.total, 'image')} · page {page.page} of {page.pages}")
_grid(store, page)
_download_all(store, store.count())
if page.pages > 1:
    back, where, forward = st.columns([1, 2, 1])
    back.button(
        "← Newer",
        key="page_prev",
        disabled=page.page <= 1,
        on_click=state.__setitem__,
        args=(PAGE, page.page - 1),
    )
    where.caption(f"Page {page.page} of {page.pages}")
    forward.button(
        "Older →",
        key="page_next",
        disabled=page.page >= page.pages,
        on_click=state.__setitem__,
        args=(PAGE, page.page + 1),
    )
