"""The Seed history page's pieces: cards, the details panel with Regenerate & verify and
Delete, the PNG import, and the whole-history download.

Prompts are user text: they are drawn with `st.text` / `st.code` (never markdown), so a
prompt holding HTML or markdown shows as typed.
"""

from __future__ import annotations

import dataclasses

import streamlit as st

from core import form, history, metadata, share
from core.auth import Visitor
from core.generation import Backend
from core.history import HistoryError, HistoryRecord, HistoryStore, Page
from core.lora_hub import hub_page, is_hub_name
from core.models import Family
from core.safe_text import format_field, plural, quote
from core.settings import Settings
from core.usecases import VerifyOutcome, regenerate_and_verify
from core.usecases.loras import match_imported, valid_hub_id
from ui import workbench
from ui.gallery_grid import grid_link
from ui.sharing import owner_label
from ui.text import for_visitor

SELECTED = "gallery_selected"
CONFIRM_DELETE = "gallery_confirm_delete"
COLUMNS = 4
GENERATOR = "pages/generate.py"
REMOTE_NOTE = (
    "A remote inference service does not guarantee identical pixels for the same seed (its "
    "hardware, versions and batching are not ours to pin), so a difference here is not "
    "necessarily an error."
)


def select(record_id: str | None) -> None:
    st.session_state[SELECTED] = record_id
    st.session_state.pop(CONFIRM_DELETE, None)


def _use_settings(values: dict) -> None:
    form.hand_over(st.session_state, values)
    st.switch_page(GENERATOR)


def _base_url() -> str:
    url = st.context.url or "http://localhost:8501"
    return url.split("?", 1)[0].rsplit("/", 1)[0] if url.count("/") > 2 else url


def _excerpt(text: str, limit: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _show_invalid(problems: list[str] | tuple[str, ...]) -> None:
    """Say why a stored record cannot be used as settings (rows are outside input: checked
    exactly like a shared link before they reach a widget or the pipeline)."""
    st.error(
        "This record holds settings the generator cannot use, so nothing was run or "
        "changed. The stored image and its download are unaffected."
    )
    st.code("\n".join(problems), language=None, wrap_lines=True)


def _show_verified(outcome: VerifyOutcome, settings: Settings) -> None:
    """What Regenerate & verify found, in the order it found it."""
    if outcome.invalid:
        _show_invalid(outcome.invalid)
        return
    if outcome.refused:
        st.error(for_visitor(outcome.refused, settings=settings))
        return
    if outcome.remote:
        st.info(REMOTE_NOTE)
    if outcome.differences:
        st.warning("This image was made in a different setup, so pixels may differ:")
        st.text("\n".join(outcome.differences))  # recorded values: plain text, never markup
    if not outcome.same_quantization:  # not like with like: a difference is no failure
        st.info("Not like with like:", icon=":material/compare:")
        st.text(outcome.quantization)  # the recorded value is outside input: plain text
    if outcome.error or outcome.verification is None:
        st.error(for_visitor(outcome.error, settings=settings))
        return
    verified = outcome.verification
    unlike = st.info if not outcome.same_quantization else st.warning
    (st.success if verified.identical else unlike)(
        f"Regenerated: {for_visitor(verified.message, settings=settings)}"
    )
    st.image(verified.png, caption="Regenerated now", width=256)


def _recorded(store: HistoryStore, record: HistoryRecord) -> None:
    """The image and everything recorded about it, as plain text."""
    st.caption("Prompt")
    st.code(record.prompt or " ", language=None, wrap_lines=True)
    st.caption("Negative prompt")
    st.code(record.negative_prompt or " ", language=None, wrap_lines=True)
    fields = {
        k: format_field(k, v)
        for k, v in dataclasses.asdict(record).items()
        if k not in ("prompt", "negative_prompt")
    }
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
    # A Vary / Inpaint / Upscale link names its source record, never bytes: it opens only
    # for a visitor who may see that record (an uploaded source cannot travel in a link).
    values = {**record.form_values(), share.SOURCE_KEY: record.source_record}
    st.code(share.share_link(values, _base_url()), language=None)


def _confirm_delete(
    store: HistoryStore, record: HistoryRecord, visitor: Visitor, settings: Settings
) -> None:
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
            select(None)
            st.rerun()
    no.button("Cancel", key="cancel_delete", on_click=st.session_state.pop, args=(CONFIRM_DELETE,))


def details(
    store: HistoryStore,
    record: HistoryRecord,
    *,
    visitor: Visitor,
    settings: Settings,
    backend: Backend,
) -> None:
    """The open record: image, settings, link, and Use / Verify / Download / Delete / Close."""
    with st.container(border=True, key="details"):
        top = st.columns([1, 2])
        with top[0]:
            image = store.stored_image(record.id)  # one read of the PNG for all three uses
            st.image(image.shown, width="stretch")
            if image.problem:
                st.warning(image.problem)
        with top[1]:
            _recorded(store, record)
        actions = st.columns(5)
        use = actions[0].button("Use these settings", key="use_settings", type="primary")
        verify = actions[1].button("Regenerate & verify", key="verify")
        actions[2].download_button(
            "Download PNG",
            data=image.png or b"",
            file_name=f"sd35-{record.seed}-{record.id[:8]}.png",
            mime="image/png",
            key="download_original",
            disabled=image.png is None,
        )
        # Only the owner or an admin is offered Delete (and the store refuses anyone else).
        if visitor.may_delete(record.owner) and actions[3].button(
            "Delete", key="delete", disabled=store.read_only is not None
        ):
            st.session_state[CONFIRM_DELETE] = record.id
        actions[4].button("Close", key="close", on_click=select, args=(None,))
        if st.session_state.get(CONFIRM_DELETE) == record.id:
            _confirm_delete(store, record, visitor, settings)
        # An edited row that is not a valid record offers no image to work on ("Use these
        # settings" says what is wrong with it).
        work = (
            None
            if record.problems()
            else workbench.action_buttons(
                png=image.png,
                record_id=record.id,
                values=record.form_values(),
                size=(int(record.width), int(record.height)),
                family=workbench.get_family_of(record),
                backend=backend,
                key="details_work",
                immediate=False,
            )
        )
        if use or work:
            problems = record.problems()
            if problems:
                _show_invalid(problems)
            else:  # the generator says what did not come along (our words)
                st.session_state[workbench.NOTE] = workbench.use_record(
                    store, record, visitor, work
                )
                st.switch_page(GENERATOR)
        if verify:
            outcome = regenerate_and_verify(
                store, record, settings=settings, visitor=visitor, backend=backend, step=st.spinner
            )
            _show_verified(outcome, settings)
        grid_link(store, record, settings)  # a grid's cell: its grid, drawn on request


def _imported_loras(parsed: metadata.ParsedParameters, backend: Backend) -> list:
    """Say which of the image's LoRAs are selected, missing or another version here."""
    found = match_imported(parsed, backend)
    if found.note:
        st.caption(found.note)
    if found.selected:  # names from the upload: code spans, never markdown
        chosen = ", ".join(f"{quote(c.name, 60)} ({c.weight:g})" for c in found.selected)
        st.caption(f"LoRAs selected: {chosen}")
    if found.missing:
        missing = ", ".join(quote(name, 60) for name in found.missing)
        st.warning(f"LoRAs not in the LoRA folder here (left out): {missing}")
        for name in found.missing:  # a Hub LoRA: say where it came from
            if is_hub_name(name) and valid_hub_id(name):
                st.caption(f"{quote(name, 100)} came from the Hub: {quote(hub_page(name))}")
    if found.from_hub:
        hub = ", ".join(f"{quote(name, 100)} ({quote(hub_page(name))})" for name in found.from_hub)
        st.caption(f"Hub LoRAs, downloaded when you generate: {hub}")
    if found.other_version:
        other = ", ".join(quote(name, 60) for name in found.other_version)
        st.warning(f"Another version of these LoRAs is here (selected; pixels may differ): {other}")
    return [(c.name, c.weight) for c in found.selected]


def import_png(family: Family, backend: Backend) -> None:
    """Import the settings of a PNG from this app or another one (checked against `family`'s
    rules, its LoRAs matched against the files here), shown as plain text."""
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
        values, warnings = share.check_values(parsed.values, family=family)
        for warning in warnings:
            st.warning(warning)
        values["loras"] = _imported_loras(parsed, backend)
        st.caption("Prompt")
        st.code(values.get("prompt") or " ", language=None, wrap_lines=True)
        shown = {k: v for k, v in values.items() if k != "prompt"} | parsed.extras
        st.dataframe(
            {"field": list(shown), "value": [str(v) for v in shown.values()]},
            hide_index=True,
        )
        if st.button("Use these settings", key="import_use", type="primary"):
            _use_settings(values)


def download_all(store: HistoryStore, total: int) -> None:
    """The whole history as a zip, made only when clicked."""
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


def grid(store: HistoryStore, page: Page) -> None:
    """One card per record of the page: thumbnail, seed and size, prompt, owner, Details."""
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
                cell = f" · grid cell {record.grid_cell + 1}" if record.grid_id else ""
                st.text(f"Seed {record.seed} · {record.width}×{record.height}{cell}")
                st.text(_excerpt(record.prompt) or "(no prompt)")
                st.text(f"by {owner_label(record.owner)}")
                st.button("Details", key=f"open_{record.id}", on_click=select, args=(record.id,))
