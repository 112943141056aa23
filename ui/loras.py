"""The generator's LoRA picker: LoRAs from SD_LORA_DIR or named by a Hub id (`owner/repo`,
`owner/repo/file.safetensors`, downloaded on Generate: core.lora_hub), a weight each.

The picked LoRAs live in the form field `loras` as (name, weight) pairs (`core.form`), so
they survive page changes and arrive from a record, an import or a shared link like any
other setting. The widgets are drawn from that field; a hand-over that changes it puts
the widgets in step before they are drawn.
"""

from __future__ import annotations

import streamlit as st

from core.generation import LORA_WEIGHT_MAX, LORA_WEIGHT_MIN, MAX_LORAS, Backend, LoraShelf
from core.lora import LoraError
from core.lora_hub import MAX_HUB_BYTES, hub_id, is_hub_name
from core.safe_text import plural, quote
from core.settings import Settings
from core.units import human_bytes
from ui.text import for_visitor

PICK_KEY = "lora_pick"
DRAWN_KEY = "lora_drawn"  # the field's value the widgets were last drawn from
WEIGHT_PREFIX = "lora_weight::"
HUB_KEY = "lora_hub_picked"  # Hub ids picked, canonical (owner/repo/file.safetensors)
HUB_INPUT = "lora_hub_input"
HUB_PROBLEM = "lora_hub_problem"
STEP = 0.05


def _weight(name: str, *, shown: int) -> None:
    """The weight input of a picked LoRA (1.0 to start), its name quoted to `shown` chars."""
    st.session_state.setdefault(WEIGHT_PREFIX + name, 1.0)
    st.number_input(
        f"Weight of {quote(name, shown)}",
        LORA_WEIGHT_MIN,
        LORA_WEIGHT_MAX,
        step=STEP,
        key=WEIGHT_PREFIX + name,
    )


def _sync(shelf: LoraShelf) -> list[str]:
    """Put the widgets in step with the `loras` field when something else changed it;
    return the names picked that are not in the folder (left out, and said so)."""
    state = st.session_state
    chosen = [(str(n), float(w)) for n, w in state.get("loras", ())]
    if state.get(DRAWN_KEY) == chosen and PICK_KEY in state:
        return []
    hub = [(n, w) for n, w in chosen if is_hub_name(n) and shelf.hub and _canonical(n)]
    hub_names = {name for name, _ in hub}
    missing = [name for name, _ in chosen if name not in shelf.names and name not in hub_names]
    kept = [(name, weight) for name, weight in chosen if name in shelf.names][:MAX_LORAS]
    hub = hub[: MAX_LORAS - len(kept)]
    state[PICK_KEY] = [name for name, _ in kept]
    state[HUB_KEY] = [name for name, _ in hub]
    for name, weight in kept + hub:
        state[WEIGHT_PREFIX + name] = min(max(weight, LORA_WEIGHT_MIN), LORA_WEIGHT_MAX)
    return missing


def _canonical(name: str) -> bool:
    try:
        return hub_id(name) == name
    except LoraError:
        return False


def _add_hub() -> None:
    """The "Add" button: check the typed id (nothing is asked of the Hub yet) and pick it."""
    state = st.session_state
    state[HUB_PROBLEM] = ""
    try:
        name = hub_id(state.get(HUB_INPUT, ""))
    except LoraError as exc:
        state[HUB_PROBLEM] = str(exc)
        return
    picked = list(state.get(HUB_KEY, []))
    if name in picked:
        return
    if len(picked) + len(state.get(PICK_KEY, [])) >= MAX_LORAS:
        state[HUB_PROBLEM] = f"At most {MAX_LORAS} LoRAs per image."
        return
    state[HUB_KEY] = [*picked, name]
    state[HUB_INPUT] = ""


def _remove_hub(name: str) -> None:
    st.session_state[HUB_KEY] = [n for n in st.session_state.get(HUB_KEY, []) if n != name]


def _hub_section() -> None:
    state = st.session_state
    st.text_input(
        "Hub LoRA",
        key=HUB_INPUT,
        max_chars=200,
        placeholder="owner/repo or owner/repo/file.safetensors",
        help=(
            "A LoRA on the Hugging Face Hub: downloaded into the Hugging Face cache when you "
            f"generate (.safetensors only, up to {human_bytes(MAX_HUB_BYTES)}). owner/repo "
            "alone means its pytorch_lora_weights.safetensors."
        ),
    )
    st.button("Add Hub LoRA", key="lora_hub_add", on_click=_add_hub, icon=":material/add:")
    if state.get(HUB_PROBLEM):
        st.error(state[HUB_PROBLEM])  # st.error renders markdown: the text is quoted
    for name in state.get(HUB_KEY, []):
        _weight(name, shown=100)  # owner/repo/file: longer than a file name
        st.button(
            "Remove",
            key=f"lora_hub_remove::{name}",
            on_click=_remove_hub,
            args=(name,),
            icon=":material/close:",
        )


def picker(settings: Settings, backend: Backend) -> None:
    """The LoRAs expander: pick LoRAs and their weights, or read why there are none."""
    state = st.session_state
    shelf = backend.loras()
    missing = _sync(shelf)
    if PICK_KEY in state:  # a file taken away since the last run is no longer offered
        state[PICK_KEY] = [name for name in state[PICK_KEY] if name in shelf.names]
    if not shelf.hub:
        state[HUB_KEY] = []
    picked = [*state.get(PICK_KEY, []), *state.get(HUB_KEY, [])]
    label = f"LoRAs ({len(picked)} on)" if picked else "LoRAs"
    with st.expander(label, icon=":material/tune:"):
        if shelf.note:
            st.caption(for_visitor(shelf.note, settings=settings))
        for name in missing:
            st.warning(
                f"LoRA {quote(name, 60)} is not in the LoRA folder here, so it was left out.",
                icon=":material/help:",
            )
        if shelf.names and not shelf.note:
            st.multiselect(
                "LoRAs",
                shelf.names,
                key=PICK_KEY,
                max_selections=MAX_LORAS,
                placeholder="Choose LoRAs from the LoRA folder",
                help="Applied to this request only, then taken off the model again.",
            )
            for name in state.get(PICK_KEY, []):
                _weight(name, shown=60)
        elif not shelf.note:
            st.caption("The LoRA folder holds no .safetensors LoRA yet.")
        if shelf.hub:
            _hub_section()
        if shelf.refused:
            st.caption(f"{plural(len(shelf.refused), 'file')} not offered:")
            st.text("\n".join(f"{name}: {reason}" for name, reason in shelf.refused[:20]))
        if shelf.truncated:
            st.caption("The folder holds more files than are listed; the first 1,000 are.")
    chosen = [*([] if shelf.note else state.get(PICK_KEY, [])), *state.get(HUB_KEY, [])]
    state["loras"] = [(name, float(state.get(WEIGHT_PREFIX + name, 1.0))) for name in chosen]
    state[DRAWN_KEY] = list(state["loras"])
