"""The Hardware page's LoRA section: each LoRA read so far and the memory it takes (in CPU
RAM until its file changes), and the ones on the pipeline right now with their memory on
its device."""

from __future__ import annotations

import streamlit as st

from core.generation import Backend
from core.settings import Settings
from core.units import human_bytes
from ui.text import for_visitor


@st.fragment(run_every="2s")
def lora_section(backend: Backend, settings: Settings) -> None:
    """LoRAs in memory (refreshed every 2 s: a request puts them on and takes them off)."""
    shelf = backend.loras()
    if shelf.note and not shelf.names:
        st.subheader("LoRAs")
        st.caption(for_visitor(shelf.note, settings=settings))
        return
    memory = backend.lora_memory()
    st.subheader("LoRAs")
    on_device = dict(memory.on_device)
    st.caption(
        f"{len(shelf.names)} in the LoRA folder · {len(memory.held)} read and kept in CPU RAM "
        f"({human_bytes(sum(n for _, n in memory.held))}) · {len(on_device)} on the pipeline now"
    )
    if not memory.held and not on_device:
        st.caption("None read yet: a LoRA is read the first time a request picks it.")
        return
    held = dict(memory.held)
    names = [*held, *(n for n in on_device if n not in held)]

    def size(sizes: dict[str, int], name: str) -> str:
        return human_bytes(sizes[name]) if name in sizes else "–"

    st.dataframe(  # names are file names: plain cells, never markdown
        {
            "LoRA": names,
            "CPU RAM (kept)": [size(held, n) for n in names],
            f"On {memory.device or 'the device'} now": [size(on_device, n) for n in names],
        },
        hide_index=True,
    )
