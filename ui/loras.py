"""The generator's LoRA picker: one or more LoRAs from SD_LORA_DIR, a weight each.

The picked LoRAs live in the form field `loras` as (name, weight) pairs (`core.form`), so
they survive page changes and arrive from a record, an import or a shared link like any
other setting. The widgets are drawn from that field; a hand-over that changes it puts
the widgets in step before they are drawn.
"""

from __future__ import annotations

import streamlit as st

from core.generation import LORA_WEIGHT_MAX, LORA_WEIGHT_MIN, MAX_LORAS, Backend, LoraShelf
from core.safe_text import plural, quote
from core.settings import Settings
from ui.text import for_visitor

PICK_KEY = "lora_pick"
DRAWN_KEY = "lora_drawn"  # the field's value the widgets were last drawn from
WEIGHT_PREFIX = "lora_weight::"
STEP = 0.05


def _sync(shelf: LoraShelf) -> list[str]:
    """Put the widgets in step with the `loras` field when something else changed it;
    return the names picked that are not in the folder (left out, and said so)."""
    state = st.session_state
    chosen = [(str(n), float(w)) for n, w in state.get("loras", ())]
    if state.get(DRAWN_KEY) == chosen and PICK_KEY in state:
        return []
    missing = [name for name, _ in chosen if name not in shelf.names]
    kept = [(name, weight) for name, weight in chosen if name in shelf.names][:MAX_LORAS]
    state[PICK_KEY] = [name for name, _ in kept]
    for name, weight in kept:
        state[WEIGHT_PREFIX + name] = min(max(weight, LORA_WEIGHT_MIN), LORA_WEIGHT_MAX)
    return missing


def picker(settings: Settings, backend: Backend) -> None:
    """The LoRAs expander: pick LoRAs and their weights, or read why there are none."""
    state = st.session_state
    shelf = backend.loras()
    missing = _sync(shelf)
    if PICK_KEY in state:  # a file taken away since the last run is no longer offered
        state[PICK_KEY] = [name for name in state[PICK_KEY] if name in shelf.names]
    picked = state.get(PICK_KEY, [])
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
                state.setdefault(WEIGHT_PREFIX + name, 1.0)
                st.number_input(
                    f"Weight of {quote(name, 60)}",
                    LORA_WEIGHT_MIN,
                    LORA_WEIGHT_MAX,
                    step=STEP,
                    key=WEIGHT_PREFIX + name,
                )
        elif not shelf.note:
            st.caption("The LoRA folder holds no .safetensors LoRA yet.")
        if shelf.refused:
            st.caption(f"{plural(len(shelf.refused), 'file')} not offered:")
            st.text("\n".join(f"{name}: {reason}" for name, reason in shelf.refused[:20]))
        if shelf.truncated:
            st.caption("The folder holds more files than are listed; the first 1,000 are.")
    chosen = [] if shelf.note else state.get(PICK_KEY, [])
    state["loras"] = [(name, float(state.get(WEIGHT_PREFIX + name, 1.0))) for name in chosen]
    state[DRAWN_KEY] = list(state["loras"])
