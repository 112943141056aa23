"""The Hardware page's sections about the model: load and unload, the pipeline as loaded,
the fair queue (admins see who and can cancel), the memory plan, and a remote service."""

from __future__ import annotations

import time

import streamlit as st

from core.auth import Visitor
from core.demo import DEMO_MODEL
from core.generation import Backend, BackendState
from core.hardware import HardwareFacts, full_size_label, memory_plan
from core.memory import DROP_T5_NOTE, MemoryPlan
from core.safe_text import inline
from core.settings import Settings
from core.units import human_bytes
from ui import plans
from ui.load import load_text, load_with_status, show_cancelled, show_load_error
from ui.text import for_visitor

UNLOADED_KEY = "hardware_unloaded"
# Streamlit's bundled Material icons: they need no emoji font on the visitor's machine.
VERDICT_ICONS = {
    "fits": ":material/check_circle:",
    "needs offload": ":material/swap_horiz:",
    "needs drop-T5": ":material/content_cut:",
    "won't fit": ":material/block:",
    "needs quantization": ":material/compress:",
    "refused": ":material/block:",
}


class Ours(str):
    """A value that is our own markdown (outside parts already quoted)."""


def lines(rows: dict[str, object], settings: Settings) -> None:
    """`- **label:** value` rows; values come from outside (OS, CPU and model names, paths):
    plain or a code span, with server paths hidden from remote visitors."""

    def show(value: object) -> str:
        text = for_visitor(value, settings=settings)
        return text if isinstance(value, Ours) else inline(text)

    st.markdown("\n".join(f"- **{name}:** {show(value)}" for name, value in rows.items()))


def _show_plan(plan: MemoryPlan, label: str) -> None:
    icon = VERDICT_ICONS.get(plan.verdict, "")
    text = f"{label}**{plan.verdict}** with {plan.summary}: {plan.reason}"
    (st.error if plan.verdict in ("won't fit", "refused") else st.info)(text, icon=icon or None)


def _unload(backend: Backend) -> None:
    # unload() waits for the generation lock: a generation running in another session
    # finishes first, then the weights go.
    with st.spinner("Waiting for running generations to finish, then unloading…"):
        dropped = backend.unload()
    # Draw the page again so the sidebar's status (drawn before this page) says so too.
    st.session_state[UNLOADED_KEY] = dropped
    st.rerun()


def _pipeline_section(backend: Backend, settings: Settings) -> None:
    state = backend.state
    loaded = backend.loaded_facts
    rows: dict[str, object] = {"State": state, "Model": backend.model}
    if state is BackendState.LOADING:
        rows["Loading for"] = f"{backend.load_progress().elapsed:.0f} s · {load_text(backend)}"
    if loaded is not None:
        tiling = f"on, {loaded.vae_tile_px} px tiles" if loaded.vae_tiling else "off"
        rows |= {
            "Device · dtype": f"{loaded.device} · {loaded.dtype}",
            "Load time": f"{loaded.load_seconds:.1f} s",
            "Memory plan": loaded.plan.summary if loaded.plan else "default",
            "VAE slicing": "on" if loaded.vae_slicing else "off",
            "VAE tiling": tiling,
            "Memory held by the weights": f"≈ {human_bytes(loaded.held_bytes)}",
            "Quantization": loaded.quantization,
            "torch.compile": plans.compile_text(loaded, settings, loaded.device),
        }
        cache = plans.cache_text(loaded)
        if cache:
            rows["Compile cache"] = cache
        if loaded.prefault_bytes:
            rows["Paged in at load"] = (
                f"{human_bytes(loaded.prefault_bytes)} in {loaded.prefault_seconds:.1f} s"
            )
        if loaded.plan is not None and loaded.plan.drop_t5:
            rows["T5"] = f"not loaded: {DROP_T5_NOTE}"
    elif backend.last_load_error:
        st.warning(
            "The last load failed: " + for_visitor(backend.last_load_error, settings=settings)
        )
    else:
        show_cancelled(backend)
    lines(rows, settings)


def model_section(backend: Backend, settings: Settings) -> None:
    """Load model now, Unload model, and the pipeline as it is loaded."""
    st.subheader("Model")
    if UNLOADED_KEY in st.session_state:
        if st.session_state.pop(UNLOADED_KEY):
            st.success("Model unloaded; the next generation loads it again.")
        else:
            st.info("The model was not loaded.")
    load_col, unload_col = st.columns(2)
    if load_col.button(
        "Load model now", key="load_model", icon=":material/download:", width="stretch"
    ):
        outcome = load_with_status(backend, settings)
        if not outcome.ok:
            show_load_error(outcome.error, settings)
    if unload_col.button(
        "Unload model", key="unload_model", icon=":material/eject:", width="stretch"
    ):
        _unload(backend)
    _pipeline_section(backend, settings)


def _cancel(backend: Backend, entry_id: int, visitor: Visitor) -> None:
    if backend.queue is not None and backend.queue.cancel(entry_id, by=visitor.id):
        st.toast("Cancelled: its owner is told so.", icon=":material/cancel:")


@st.fragment(run_every="2s")
def queue_section(backend: Backend, visitor: Visitor) -> None:
    """The fair queue: everyone sees how busy it is; admins see who, what, since when."""
    if backend.queue is None:
        return  # a remote service runs requests side by side: no queue here
    st.subheader("Queue")
    entries = backend.queue.entries()
    running = sum(e.running for e in entries)
    st.caption(f"{running} running · {len(entries) - running} waiting · refreshed every 2 s")
    if not visitor.is_admin or not entries:
        return
    now = time.time()
    for entry in entries:
        where = "running" if entry.running else f"#{entry.place} in line"
        row, button = st.columns([5, 1], vertical_alignment="center")
        # Plain text: an email is visitor input.
        row.text(
            f"{where} · {entry.user or 'the app'} · {entry.label} · "
            f"since {time.strftime('%H:%M:%S', time.localtime(entry.since))} "
            f"({now - entry.since:.0f} s)"
        )
        button.button(
            "Cancel",
            key=f"cancel_{entry.id}",
            on_click=_cancel,
            args=(backend, entry.id, visitor),
        )


def remote_section(backend: Backend, settings: Settings) -> None:
    """A remote service: where it is, the token's presence, and recent latency."""
    st.subheader("Remote backend")
    st.caption("Images are made by the remote service; this machine only sends requests.")
    lines(dict(backend.describe().rows), settings)


def plan_section(backend: Backend, settings: Settings, facts: HardwareFacts) -> None:
    """The memory plan in force (or the one the next load would choose), and the chart."""
    st.subheader("Memory plan")
    plan = memory_plan(settings, facts)
    is_demo = settings.model == DEMO_MODEL
    loaded = backend.loaded_facts
    shown = in_force = plan
    if loaded is not None and loaded.plan is not None:
        # Free memory now excludes the loaded weights: show the plan chosen at load time.
        shown = in_force = loaded.plan
        _show_plan(loaded.plan, "In force (chosen at load): ")
    elif plan is not None:
        _show_plan(plan, "Demo model: " if is_demo else "")
    cuda = facts.choice is not None and facts.choice.device == "cuda"
    if plan is not None and is_demo:
        shown = memory_plan(settings, facts, sd35=True)
        _show_plan(shown, f"{full_size_label(settings)} here: ")
        st.caption(
            f"SD_MEMORY={settings.memory} · SD_OFFLOAD={settings.offload or 'unset'} · "
            f"SD_DROP_T5={'unset' if settings.drop_t5 is None else settings.drop_t5} · "
            f"SD_QUANT={settings.quant} · SD_VAE_TILE={settings.vae_tile} · "
            f"SD_COMPILE={settings.compile}. Applied at the next load."
        )
    label = f"{full_size_label(settings)}: " if is_demo else ""
    plans.candidates_table(shown, cuda=cuda, label=label)
    device = facts.choice.device if facts.choice is not None else None
    decisions = {"VAE": plans.vae_text(in_force)}
    decisions["Compile"] = plans.compile_text(loaded, settings, device)
    lines(decisions, settings)
    _memory_chart(facts, in_force)


def memory_bars(facts: HardwareFacts, plan: MemoryPlan | None) -> list[tuple[float, str]]:
    """One bar per memory: the share in use and the words beside it (used, free, total,
    and what the plan needs of it: GPU 0's memory on CUDA, else RAM)."""
    memories = [("RAM", facts.ram_total_bytes, facts.ram_available_bytes)]
    memories += [(f"GPU {g.index} VRAM", g.total_bytes, g.free_bytes) for g in facts.gpus]
    need_on = "GPU 0 VRAM" if facts.free_vram_bytes is not None else "RAM"
    bars = []
    for name, total, free in memories:
        used = max(total - free, 0)
        text = (
            f"{name}: {human_bytes(used)} used · {human_bytes(free)} free of {human_bytes(total)}"
        )
        if plan is not None and plan.needed_bytes and name == need_on:
            fits = "fits in" if plan.needed_bytes <= free else "more than"
            text += f" · the plan needs {human_bytes(plan.needed_bytes)} ({fits} what is free)"
        bars.append((min(used / total, 1.0) if total > 0 else 0.0, text))
    return bars


def _memory_chart(facts: HardwareFacts, plan: MemoryPlan | None = None) -> None:
    """Used and free RAM and VRAM as bars (plain HTML bars: they draw without a chart
    library), with what the plan needs beside the memory it needs it in."""
    for share, text in memory_bars(facts, plan):
        st.progress(share, text=text)
