"""Hardware: what the app runs on, the memory plan it picks, and the model's load state."""

import importlib.util

import streamlit as st

from core.hardware import HardwareFacts, gather_facts, hub_facts
from core.settings import Settings
from core.units import human_bytes
from ui import hardware, page
from ui.hardware import Ours, lines
from ui.hardware_loras import lora_section
from ui.text import for_visitor


def _device_section(facts: HardwareFacts, settings: Settings) -> None:
    st.subheader("Device")
    if facts.choice is None:
        st.error(for_visitor(facts.choice_error, settings=settings))
        return
    lines(
        {
            "Device": f"{facts.choice.device} ({facts.choice.device_reason})",
            "dtype": f"{facts.choice.dtype} ({facts.choice.dtype_reason})",
        },
        settings,
    )


def _machine_sections(facts: HardwareFacts, settings: Settings) -> None:
    """GPU, CPU and RAM, and the software versions."""
    st.subheader("GPU")
    if not facts.gpus:
        mps = "available" if facts.mps_available else "not available"
        cuda = facts.cuda_version or "none"
        st.markdown(f"No CUDA GPU (CUDA in this torch: {cuda}). MPS: {mps}.")
    for gpu in facts.gpus:
        free, total = human_bytes(gpu.free_bytes), human_bytes(gpu.total_bytes)
        lines(
            {
                f"GPU {gpu.index}": f"{gpu.name} (compute capability {gpu.capability})",
                "VRAM": f"{free} free of {total}",
                "Held by this app": human_bytes(gpu.held_bytes),
            },
            settings,
        )
    if facts.gpus:
        st.caption(f"CUDA {facts.cuda_version}")

    st.subheader("CPU and RAM")
    cpu = facts.cpu
    available, total = human_bytes(facts.ram_available_bytes), human_bytes(facts.ram_total_bytes)
    lines(
        {
            "CPU": cpu.model,
            "Cores": f"{cpu.physical_cores or '?'} physical, {cpu.logical_cores} logical",
            "Native bfloat16": "yes" if cpu.native_bf16 else "no",
            "RAM": f"{available} available of {total}",
        },
        settings,
    )

    st.subheader("Software")
    lines({"OS": facts.os, "Python": facts.python, **facts.versions}, settings)


def _hub_section(settings: Settings) -> None:
    st.subheader("Hugging Face")
    hub = hub_facts(settings)
    rows: dict[str, object] = {
        "Token configured": "yes" if hub.token_configured else "no",
        "Cache": hub.cache_dir,
    }
    if hub.cached_bytes is not None:
        rows["Model files"] = f"{human_bytes(hub.cached_bytes)} in {hub.cached_files} files"
    if hub.revision:
        rows["Cached revision"] = hub.revision[:12]
    rows["Model"] = Ours(hub.note)
    lines(rows, settings)
    if hub.problem:
        st.error(for_visitor(hub.problem, settings=settings))


start = page.start("Hardware")
settings, backend = start.settings, start.backend
if start.family_note:  # which model family's rules apply, when they were guessed
    st.info(start.family_note)
remote = backend.name == "remote"
if remote:
    hardware.remote_section(backend, settings)
    if importlib.util.find_spec("torch") is None:
        # The light install (requirements.txt, Streamlit Community Cloud) has no torch.
        st.info("torch is not installed here (remote-only install): no local GPU facts.")
        st.stop()
else:
    hardware.model_section(backend, settings)
    hardware.queue_section(backend, start.visitor)
    lora_section(backend, settings)

facts = gather_facts(settings)
_device_section(facts, settings)
if not remote:
    hardware.plan_section(backend, settings, facts)
_machine_sections(facts, settings)
_hub_section(settings)
