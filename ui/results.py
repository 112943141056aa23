"""The Generate page's output: a running generation (Stop, progress, live preview), the
result with its downloads, and this session's strip of recent results."""

from __future__ import annotations

import functools
from typing import Any

import streamlit as st

from core import form, recent
from core.generation import Backend, Progress
from core.models import Family
from core.progress_text import progress_text
from core.safe_text import plural
from core.settings import Settings
from core.usecases import Generated
from ui import workbench
from ui.sidebar import refresh_sidebar
from ui.text import for_visitor

RESULT_KEY = "last_result"
RUNNING_KEY = "generation_running"  # what a running generation does; left behind by a Stop


class LiveProgress:
    """The Stop button, progress bar and live preview of the generation this run makes."""

    def __init__(self, backend: Backend, *, preview: bool) -> None:
        self.backend = backend
        self.preview = preview
        self.bar = self.preview_slot = None

    def start(self) -> None:
        """Draw Stop, the bar and the preview's place (the model is ready)."""
        # Clicking Stop reruns the script; Streamlit then raises inside the next progress
        # update, which ends the pipeline call within one step (the lock is freed in finally).
        st.button("Stop", key="stop", icon=":material/stop_circle:")
        self.bar = st.progress(0.0, text="Queued…")
        self.preview_slot = st.empty()
        if self.preview:  # remote mode: the note under the toggle says why there is none
            self.preview_slot.caption("The preview appears from step 2.")
        st.session_state[RUNNING_KEY] = "before the first step"

    def update(self, p: Progress) -> None:
        """Show one progress update: bar, sidebar status and, when due, the preview."""
        state = st.session_state
        state[RUNNING_KEY] = progress_text(p)
        self.bar.progress(p.fraction, text=state[RUNNING_KEY])
        refresh_sidebar(self.backend, f"generating · {state[RUNNING_KEY]}")
        if p.preview is not None:
            image = f"image {p.image_index + 1}/{p.num_images} · " if p.num_images > 1 else ""
            self.preview_slot.image(
                p.preview,
                caption=f"Preview · {image}step {p.step}/{p.total_steps}",
                width="stretch",
            )
        if p.phase == "saving":  # the images are made: a Stop from here on stops nothing
            state.pop(RUNNING_KEY, None)

    def clear(self) -> None:
        """Remove the bar and the preview (the generation ended, either way)."""
        st.session_state.pop(RUNNING_KEY, None)
        if self.bar is not None:
            self.bar.empty()
            self.preview_slot.empty()


def _recalled_settings(result: Generated) -> None:
    values = result.form_values or {}
    st.caption("Shown again from this session")
    st.text(
        f"{values['prompt'] or '(no prompt)'}\n"
        f"Guidance {values['guidance_scale']:g} · {plural(values['num_images'], 'image')}"
    )
    st.button(
        "Use these settings",
        key="recent_use",
        type="primary",
        on_click=form.hand_over,
        args=(st.session_state, values),
    )


def _size(result: Generated) -> tuple[int, int]:
    width, _, height = result.size.partition("×")
    return int(width), int(height)


def show_result(
    result: Generated,
    settings: Settings,
    *,
    family: Family | None = None,
    backend: Backend | None = None,
) -> None:
    """The images with their seeds and downloads, and what the history did not keep; with
    `family` and `backend`, Vary / Inpaint / Upscale under each image."""
    seeds = ", ".join(str(s) for s in result.seeds)
    timing = f"{result.generation_seconds:.1f} s"
    if result.load_seconds >= 0.05:
        timing += f" + model load {result.load_seconds:.1f} s"
    if result.queue_seconds >= 0.5:
        timing += f" + waited {result.queue_seconds:.0f} s"
    st.success(f"Seed {seeds} · {result.size} · {plural(result.steps, 'step')} · {timing}")
    if result.history_error:
        st.warning(for_visitor(result.history_error, settings=settings), icon=":material/save:")
    if result.recalled:  # shown again from the strip: its settings, as plain text
        _recalled_settings(result)
    downloadable = result.downloadable or (True,) * len(result.pngs)
    columns = st.columns(min(len(result.pngs), 2))
    for i, (png, seed) in enumerate(zip(result.pngs, result.seeds, strict=True)):
        with columns[i % len(columns)]:
            st.image(png, caption=f"Seed {seed}", width="stretch")
            if downloadable[i]:
                st.download_button(
                    "Download PNG",
                    data=png,
                    file_name=f"sd35-{seed}.png",
                    mime="image/png",
                    key=f"download_{i}",
                )
            else:
                st.caption("No longer in the seed history: nothing to download.")
            if family is not None and backend is not None and downloadable[i]:
                ids = result.record_ids or (None,) * len(result.pngs)
                workbench.action_buttons(
                    png=png,
                    record_id=ids[i] if i < len(ids) else None,
                    values={**(result.form_values or {}), "seed": seed},
                    size=_size(result),
                    family=family,
                    backend=backend,
                    key=f"work_{i}",
                )


def _show_again(entry_id: str, settings: Settings) -> None:
    """Strip click: show that result again, its PNGs read back from the seed history."""
    from core import history

    entry = recent.find(st.session_state, entry_id)
    if entry is None:
        return

    def load_png(record_id: str) -> bytes | None:
        """The stored PNG while its record is live (a deleted one is not shown again)."""
        try:
            store = history.open_store(settings)
            return store.png_bytes(record_id) if store.get(record_id) is not None else None
        except history.HistoryError:
            return None

    st.session_state[RESULT_KEY] = recent.recall(
        entry, load_png=load_png, missing=lambda: history.placeholder_image(512, "image deleted")
    )


def _stored_png(settings: Settings, record_id: str) -> bytes | None:
    """A strip entry's stored PNG while its record is live (read when a button is clicked)."""
    from core import history

    try:
        store = history.open_store(settings)
        return store.png_bytes(record_id) if store.get(record_id) is not None else None
    except history.HistoryError:
        return None


def _strip_actions(
    entry: recent.RecentEntry, settings: Settings, family: Family, backend: Backend
) -> None:
    """Vary / Inpaint / Upscale of an entry's first image, in a popover under its button."""
    record_id = entry.record_ids[0] if entry.record_ids else None
    if record_id is not None:
        png: Any = functools.partial(_stored_png, settings, record_id)
    elif entry.pngs:
        png = entry.pngs[0]
    else:
        return  # neither kept nor held: nothing to work on
    with st.popover(
        "", icon=":material/edit:", width="stretch", help="Vary, Inpaint or Upscale it"
    ):
        workbench.action_buttons(
            png=png,
            record_id=record_id,
            values=entry.form_values,
            size=_size(entry.shown),
            family=family,
            backend=backend,
            key=f"strip_{entry.id}",
        )


def strip(
    settings: Settings, *, family: Family | None = None, backend: Backend | None = None
) -> None:
    """This session's recent results as thumbnails; a click shows one again. With `family`
    and `backend`, each has Vary / Inpaint / Upscale in a popover."""
    entries = recent.entries(st.session_state)
    if not entries:
        return
    st.caption("This session")
    shown = st.session_state.get(RESULT_KEY)
    shown_id = shown.recalled if shown is not None else None
    columns = st.columns(recent.LIMIT // 2)
    for i, entry in enumerate(entries):
        with columns[i % len(columns)]:
            st.image(entry.thumbnail, width="stretch")
            st.button(
                entry.label,
                key=f"recent_{entry.id}",
                on_click=_show_again,
                args=(entry.id, settings),
                type="secondary" if entry.id == shown_id else "tertiary",
                width="stretch",
            )
            if family is not None and backend is not None:
                _strip_actions(entry, settings, family, backend)
