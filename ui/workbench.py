"""Working on an image: the generator's mode (Text to image, Vary, Inpaint, Upscale), the
source image (a result, a strip entry, a Seed history record, or an upload), the mode's
own controls, and the Vary / Inpaint / Upscale buttons the results and the gallery show.

The source lives in `st.session_state` as a `core.sources.ImageInput`: a record's stored
PNG (referenced by its id in the record made from it) or an upload's fitted pixels. The
mode and its options are generator form fields (`core.form`); `inputs()` is what the
Generate click adds to the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import streamlit as st

from core import form
from core.generation import Backend
from core.models import Family
from core.modes import DEFAULT_MODE, get_mode, mode_ids
from core.modes.shared import steps_that_run
from core.modes.upscale import UpscaleError, target_size
from core.sources import ImageInput
from core.usecases import Generated

SOURCE = "work_source"  # ImageInput | None: what Vary / Inpaint / Upscale work on
SOURCE_FIT = "work_source_fit"  # core.images.Fit of an upload (a mask made on it follows)
SOURCE_ERROR = "work_source_error"  # why the last upload was refused (our words)
UPLOAD = "source_upload"
NOTE = "work_note"  # what did not come along from the Seed history, said once
LAST_MODE = "work_last_mode"  # the mode drawn last (a change to nothing goes back to it)
GENERATOR = "pages/generate.py"
# The buttons under an image: mode id → (label, icon).
ACTIONS = {
    "img2img": ("Vary", ":material/auto_awesome:"),
    "inpaint": ("Inpaint", ":material/brush:"),
    "upscale": ("Upscale", ":material/zoom_in:"),
}


def inputs() -> dict[str, ImageInput | None]:
    """The source and mask the Generate click adds to the request (`form.build_request`)."""
    from ui.masks import current_mask

    return {"source": st.session_state.get(SOURCE), "mask": current_mask()}


# --- choosing a source -------------------------------------------------------------------
def use_image(
    state: Any,
    *,
    source: ImageInput,
    values: Mapping[str, Any],
    mode_id: str,
    family: Family,
) -> None:
    """Make `source` the image to work on in `mode_id`, with `values` (the generator form's
    values that made it) in the form: Vary and Inpaint draw a new seed, Upscale keeps the
    seed (A1111's hires fix), each mode starts at its own strength."""
    from ui.masks import clear_mask

    mode = get_mode(mode_id)
    options = {k: v for k, v in mode.defaults().items() if k not in family.option_defaults()}
    handed = {**values, **options, "mode": mode.id, "randomize_seed": mode.id != "upscale"}
    form.hand_over(state, handed)
    state[SOURCE] = source
    state.pop(SOURCE_FIT, None)
    state.pop(SOURCE_ERROR, None)
    clear_mask(state)


def with_sources(shown: Generated, *, request: Any, record_ids: Any) -> Generated:
    """The result as the generator keeps it: with the record ids and form values its
    Vary / Inpaint / Upscale buttons need."""
    from core.recent import form_values_of

    return replace(
        shown,
        record_ids=tuple(record_ids),
        form_values=shown.form_values or form_values_of(shown.seeds, request),
    )


def _source_of(png: bytes, record_id: str | None, label: str) -> ImageInput | None:
    from core.sources import InputError, from_png

    try:
        return from_png(png, record_id=record_id, note=label)
    except InputError as exc:
        st.session_state[SOURCE_ERROR] = str(exc)
        return None


def _use_result(png: Any, record_id: str | None, values: dict, mode_id: str, family: Family):
    """A button's callback: a result (or strip entry) becomes the source. `png` is the
    bytes, or a function reading them (a strip entry's, read only when clicked)."""
    data = png() if callable(png) else png
    if data is None:
        st.session_state[SOURCE_ERROR] = "That image is no longer in the seed history."
        return
    source = _source_of(data, record_id, f"Seed {values.get('seed')} (this session)")
    if source is not None:
        use_image(st.session_state, source=source, values=values, mode_id=mode_id, family=family)


def upscale_problem(size: tuple[int, int], family: Family) -> str | None:
    """Why an image of `size` cannot be upscaled here (already at the largest), or None."""
    try:
        target_size(size, {"factor": "1.25"}, family)
    except UpscaleError as exc:
        return str(exc)
    return None


def _why(mode_id: str, backend: Backend, size: tuple[int, int], family: Family) -> str:
    why = backend.why_not(mode_id)
    if not why and mode_id == "upscale":
        why = upscale_problem(size, family) or ""
    return why


def action_buttons(
    *,
    png: Any,
    record_id: str | None,
    values: Mapping[str, Any],
    size: tuple[int, int],
    family: Family,
    backend: Backend,
    key: str,
    immediate: bool = True,
) -> str | None:
    """Vary / Inpaint / Upscale for one image (`png`: its bytes, or a function reading
    them); a mode the backend cannot run (or an image already at the largest size, for
    Upscale) is shown disabled with the reason.

    With `immediate` the image becomes the source at once (a callback); else the clicked
    mode id is returned for the caller (the gallery switches page after it).
    """
    clicked = None
    for column, (mode_id, (label, icon)) in zip(
        st.columns(len(ACTIONS)), ACTIONS.items(), strict=True
    ):
        why = _why(mode_id, backend, size, family)
        callback = {}
        if immediate:
            callback = {
                "on_click": _use_result,
                "args": (png, record_id, dict(values), mode_id, family),
            }
        pressed = column.button(
            label,
            key=f"{key}_{mode_id}",
            icon=icon,
            disabled=bool(why),
            help=why or get_mode(mode_id).summary,
            width="stretch",
            **callback,
        )
        if pressed:
            clicked = mode_id
    return clicked


def use_record(store: Any, record: Any, visitor: Any, mode_id: str | None = None) -> str:
    """Put `record` to work: with `mode_id`, its image becomes the source of that mode;
    without, its own settings go to the generator with the source and mask it was made from
    ("Use these settings"). Return a note for the page ("" when all went over)."""
    from core import history
    from core.sources import InputError, from_png
    from ui.masks import clear_mask, keep_mask

    state = st.session_state
    family = get_family_of(record)
    if mode_id is not None:
        png = store.png_bytes(record.id)
        try:
            source = from_png(png or b"", record_id=record.id, note=f"Seed {record.seed}")
        except InputError as exc:
            return f"This record's image cannot be worked on: {exc}"
        use_image(state, source=source, values=record.form_values(), mode_id=mode_id, family=family)
        return ""
    form.hand_over(state, record.form_values())
    if not get_mode(record.mode).needs_source:
        return ""
    origin = record.source_record and history.visible_record(store, record.source_record, visitor)
    try:
        if record.source_record and not origin:
            raise history.InputsMissing("its source record is not one you can see")
        source, mask = history.record_inputs(store, record)
    except (history.InputsMissing, history.HistoryError) as exc:
        return f"The image this record worked on did not come along: {exc}. Pick or upload one."
    state[SOURCE] = replace(source, note=f"the image record {record.id[:8]} worked on")
    state.pop(SOURCE_FIT, None)
    clear_mask(state)
    if mask is not None:
        keep_mask(state, mask)
    return ""


def get_family_of(record: Any) -> Family:
    from core.models import DEFAULT_FAMILY, UnknownFamily, get_family

    try:
        return get_family(record.family)
    except UnknownFamily:
        return DEFAULT_FAMILY


# --- the section on the generator -------------------------------------------------------
def _open_link_source(start: Any) -> None:
    """A shared link's `source` record: opened only for a visitor allowed to see it."""
    from core import history
    from core.share import LINK_SOURCE_KEY

    state = st.session_state
    record_id = state.pop(LINK_SOURCE_KEY, None)
    if record_id is None:
        return
    try:
        store = history.open_store(start.settings)
        record = history.visible_record(store, record_id, start.visitor)
        source = history.record_source(store, record) if record is not None else None
    except (history.HistoryError, history.InputsMissing):
        source = None
    if source is None:  # never says whether such a record exists
        st.warning(
            "This link names a source image that is not in the Seed history you can see. "
            "Pick a result or upload an image to work on."
        )
        return
    state[SOURCE] = replace(source, note=f"Seed {record.seed} (from the shared link)")
    state.pop(SOURCE_FIT, None)


def _available(backend: Backend, family: Family) -> list[str]:
    return [m for m in mode_ids() if m in backend.modes and family.supports(m)]


def _mode_changed(available: list[str], family: Any) -> None:
    """The mode control's change: to a mode this backend runs, with its defaults. A change
    to nothing (a click on the chosen pill while the page redraws) keeps the last mode."""
    state = st.session_state
    mode = state.get("mode")
    if mode not in available:
        mode = state.get(LAST_MODE) if state.get(LAST_MODE) in available else DEFAULT_MODE.id
    form.switch_mode(state, mode, family)
    state[LAST_MODE] = mode


def _mode_picker(start: Any) -> str:
    """The mode control; say plainly which modes this backend cannot run."""
    state = st.session_state
    backend, family = start.backend, start.family
    available = _available(backend, family)
    wanted = state.get("mode", DEFAULT_MODE.id)
    if wanted not in available:  # a link, an import or a record asked for it
        st.warning(backend.why_not(wanted) or f"{get_mode(wanted).label} is not available.")
        state["mode"] = DEFAULT_MODE.id
    st.segmented_control(
        "Mode",
        available,
        format_func=lambda m: get_mode(m).label,
        key="mode",
        required=True,
        on_change=_mode_changed,
        args=(available, family),
    )
    missing = [m for m in mode_ids() if m not in available and family.supports(m)]
    for reason in dict.fromkeys(backend.why_not(m) for m in missing):
        if reason:
            st.caption(reason)
    state[LAST_MODE] = state["mode"]
    return state["mode"]


def _take_upload(family: Family) -> None:
    """The uploader's callback: read the file under the hostile-input rules, fit it to the
    family's sizes, and make it the source (or say why not)."""
    from core.images import UploadError, read_upload
    from core.sources import from_image
    from ui.masks import clear_mask

    state = st.session_state
    upload = state.get(UPLOAD)
    if upload is None:
        return
    rules = family.sizes
    try:
        read = read_upload(
            upload.getvalue(), min_side=rules.min, max_side=rules.max, multiple=rules.multiple
        )
    except UploadError as exc:
        state[SOURCE_ERROR] = str(exc)
        return
    state[SOURCE] = from_image(read.image, note=f"Upload · {read.note}")
    state[SOURCE_FIT] = read.fit
    state.pop(SOURCE_ERROR, None)
    clear_mask(state)


def _source_panel(start: Any, mode_id: str) -> ImageInput | None:
    """The image being worked on (with a way to drop it), and the uploader."""
    from core.images import UPLOAD_TYPES

    state = st.session_state
    source: ImageInput | None = state.get(SOURCE)
    if source is not None:
        if mode_id == "inpaint":  # painted on below: no picture of it here
            words = st.container()
        else:
            picture, words = st.columns([1, 2], vertical_alignment="center")
            picture.image(source.png, width="stretch")
        words.caption(f"Working on {source.width}×{source.height}: {source.note}")
        words.button(
            "Clear image",
            key="clear_source",
            icon=":material/close:",
            on_click=lambda: [state.pop(k, None) for k in (SOURCE, SOURCE_FIT)],
        )
    else:
        st.caption(
            f"{get_mode(mode_id).label} works on an image: press its button under a result, "
            "on this session's strip or in the Seed history, or upload one."
        )
    st.file_uploader(
        "Upload an image (PNG, JPEG or WebP)",
        type=list(UPLOAD_TYPES),
        key=UPLOAD,
        on_change=_take_upload,
        args=(start.family,),
        max_upload_size=20,
        help=f"Fitted to {start.family.label}'s sizes ({start.family.sizes.describe()}); "
        "the note says how.",
    )
    if SOURCE_ERROR in state:
        st.error(state[SOURCE_ERROR])  # our words: nothing from the file is in them
    return state.get(SOURCE)


def _strength(mode_id: str) -> None:
    """Strength, with the steps that really run (40 steps × 0.6 = 24)."""
    state = st.session_state
    option = get_mode(mode_id).option("strength")
    st.slider(
        option.label,
        option.low,
        option.high,
        step=0.05,
        key="strength",
        help=option.help,
    )
    steps, strength = int(state["steps"]), float(state["strength"])
    runs = steps_that_run(steps, strength)
    st.caption(f"{steps} steps × {strength:g} = {runs} {'step' if runs == 1 else 'steps'} run")


def _upscale(source: ImageInput | None, family: Family) -> None:
    state = st.session_state
    option = get_mode("upscale").option("factor")
    st.segmented_control(
        option.label,
        option.choices,
        format_func=lambda f: f"×{f}",
        key="factor",
        required=True,
        help=option.help,
    )
    if source is None:
        return
    try:
        width, height = target_size(source.size, {"factor": state["factor"]}, family)
    except UpscaleError as exc:
        st.warning(str(exc))
        return
    st.caption(f"{source.width}×{source.height} → {width}×{height} (Lanczos, then a Vary)")


def section(start: Any) -> None:
    """The mode, and for the modes that work on an image: the source, an upload, and the
    mode's controls (strength, the inpaint mask, the upscale factor)."""
    from ui.masks import mask_panel

    _open_link_source(start)
    note = st.session_state.pop(NOTE, "")
    if note:
        st.warning(note)
    mode_id = _mode_picker(start)
    mode = get_mode(mode_id)
    if not mode.needs_source:
        return
    with st.container(border=True, key="work_on_image"):
        source = _source_panel(start, mode_id)
        if mode_id == "inpaint":
            mask_panel(source, fit=st.session_state.get(SOURCE_FIT))
        if mode_id == "upscale":
            _upscale(source, start.family)
        _strength(mode_id)


def planned(family: Family) -> tuple[int, int, int]:
    """(width, height, steps that run) of what Generate would make now: the estimate's."""
    state = st.session_state
    mode = get_mode(state.get("mode", DEFAULT_MODE.id))
    width, height, steps = int(state["width"]), int(state["height"]), int(state["steps"])
    source: ImageInput | None = state.get(SOURCE)
    if mode.needs_source and source is not None:
        try:
            options = {o.name: state.get(o.name, o.default) for o in mode.options}
            size = mode.output_size(source.size, options, family)
        except UpscaleError:
            size = None
        width, height = size or source.size
    if mode.option("strength") is not None and "strength" in state:
        steps = steps_that_run(steps, float(state["strength"]))
    return width, height, steps
