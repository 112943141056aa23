"""The inpaint mask: painted on the source in the browser (streamlit-drawable-canvas), or an
uploaded mask PNG; brush size, clear, invert, and the mask blur.

`streamlit_drawable_canvas` registers a Streamlit component when imported, which raises
outside a running app: it is imported inside `_canvas`, never at the top.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.modes import get_mode
from core.sources import ImageInput

MASK = "work_mask"  # ImageInput | None: the mask Generate sends (inverted when asked)
CANVAS_ROUND = "work_canvas_round"  # bumped by Clear: a new canvas key starts empty
MASK_UPLOAD = "mask_upload"
MASK_NOTE = "work_mask_note"
MASK_ERROR = "work_mask_error"
KEPT = "work_mask_kept"  # a record's mask ("Use these settings"), until painted over
INVERT = "mask_invert"
BRUSH = "mask_brush"
# px on the page: fits the form column beside the output on a wide screen (the canvas does
# not shrink with its column); the image's shape, scaled, and the mask scaled back.
CANVAS_WIDTH = 360


def current_mask() -> ImageInput | None:
    return st.session_state.get(MASK)


def clear_mask(state: Any) -> None:
    """Forget the painted, uploaded and kept mask (a new source was chosen, or Clear)."""
    state[CANVAS_ROUND] = state.get(CANVAS_ROUND, 0) + 1
    for key in (MASK, MASK_NOTE, MASK_ERROR, KEPT):
        state.pop(key, None)


def keep_mask(state: Any, mask: ImageInput) -> None:
    """Use a record's mask until something is painted or uploaded instead."""
    state[KEPT] = mask
    state[MASK] = mask


def _canvas(source: ImageInput) -> Any:
    """The canvas with the source behind it; return its RGBA image data (None: untouched)."""
    from PIL import Image
    from streamlit_drawable_canvas import st_canvas  # raises outside a running app

    state = st.session_state
    width = min(CANVAS_WIDTH, source.width)
    height = round(width * source.height / source.width)
    background = source.image("RGB").resize((width, height), Image.Resampling.LANCZOS)
    result = st_canvas(
        stroke_width=int(state.get(BRUSH, 32)),
        stroke_color="#ffffff",
        background_image=background,
        drawing_mode="freedraw",
        width=width,
        height=height,
        key=f"inpaint_canvas_{state.get(CANVAS_ROUND, 0)}",
        return_image_data=True,
    )
    return result.image_data


def _uploaded_mask(source: ImageInput, fit: Any) -> Any:
    """The uploaded mask PNG fitted to the source, or None (an error or note is kept)."""
    from core.masks import MaskError, read_mask_upload

    state = st.session_state
    upload = state.get(MASK_UPLOAD)
    if upload is None:
        return None
    try:
        read = read_mask_upload(upload.getvalue(), image_size=source.size, upload_fit=fit)
    except MaskError as exc:
        state[MASK_ERROR] = str(exc)
        return None
    state[MASK_NOTE] = read.note
    return read.mask


def _make_mask(source: ImageInput, fit: Any, painted: Any) -> None:
    """Keep the mask Generate sends: the upload, else the painting; inverted when asked."""
    from core.masks import MaskError, invert_mask, is_empty, mask_from_canvas
    from core.sources import from_image

    state = st.session_state
    for key in (MASK, MASK_NOTE, MASK_ERROR):
        state.pop(key, None)
    mask = _uploaded_mask(source, fit)
    if mask is None and painted is not None and MASK_ERROR not in state:
        try:
            mask = mask_from_canvas(painted, source.size)
        except MaskError as exc:
            state[MASK_ERROR] = str(exc)
    if mask is None:
        if KEPT in state and MASK_ERROR not in state:  # the record's, as it was used
            state[MASK] = state[KEPT]
            state[MASK_NOTE] = "The mask this record was made with; paint or upload to change it."
        return
    state.pop(KEPT, None)  # painted or uploaded over
    if state.get(INVERT):
        mask = invert_mask(mask)
    if not is_empty(mask):
        state[MASK] = from_image(mask)


def _painted_share(mask: ImageInput | None) -> str:
    if mask is None:
        return "Nothing painted yet: paint the area to repaint."
    painted = sum(mask.image("L").histogram()[128:])
    share = painted / (mask.width * mask.height)
    return f"Repainting {share:.1%} of the image; the rest stays exactly as it is."


def mask_panel(source: ImageInput | None, *, fit: Any = None) -> None:
    """Paint (or upload) the mask on `source`, with brush size, Clear, Invert and blur."""
    state = st.session_state
    if source is None:
        return
    st.slider("Brush size", 4, 96, 32, step=4, key=BRUSH, help="Pixels on the canvas.")
    st.caption("Paint over what to repaint:")  # the canvas's own toolbar sits beside this
    painted = _canvas(source)
    clear, invert = st.columns(2, vertical_alignment="center")
    clear.button(
        "Clear the mask",
        key="mask_clear",
        icon=":material/ink_eraser:",
        on_click=clear_mask,
        args=(state,),
    )
    invert.toggle("Invert", key=INVERT, help="Repaint everything except what is painted.")
    st.file_uploader(
        "…or upload a mask PNG (white = repaint)",
        type=["png"],
        key=MASK_UPLOAD,
        max_upload_size=20,
        help="The image's size, or the size of the uploaded original (fitted the same way).",
    )
    _make_mask(source, fit, painted)
    if MASK_ERROR in state:
        st.error(state[MASK_ERROR])  # our words
    elif MASK_NOTE in state and state[MASK_NOTE]:
        st.caption(state[MASK_NOTE])
    st.caption(_painted_share(current_mask()))
    option = get_mode("inpaint").option("mask_blur")
    st.slider(option.label, int(option.low), int(option.high), key="mask_blur", help=option.help)
