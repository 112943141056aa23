"""Hardware: what the app runs on, the memory plan it picks, and the model's load state."""

import importlib.util
import time

import streamlit as st

from core.access import require_visitor
from core.demo import DEMO_MODEL
from core.hardware import full_size_label, gather_facts, hub_facts, memory_plan
from core.memory import DROP_T5_NOTE
from core.models import family_for
from core.remote import remote_facts
from core.safe_text import for_visitor, inline
from core.service import current_settings, get_backend, load_text, load_with_status
from core.settings import SettingsError

UNLOADED_KEY = "hardware_unloaded"
VERDICT_ICONS = {"fits": "✅", "needs offload": "🐢", "needs drop-T5": "✂️", "won't fit": "⛔"}


def _gb(n: float | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / 1e6:.1f} MB" if n < 1e8 else f"{n / 1e9:.1f} GB"


def _show_plan(plan, label: str) -> None:
    icon = VERDICT_ICONS.get(plan.verdict, "")
    text = f"{label}**{plan.verdict}** with {plan.summary}: {plan.reason}"
    (st.error if plan.verdict == "won't fit" else st.info)(text, icon=icon or None)


class _Ours(str):
    """A value that is our own markdown (outside parts already quoted)."""


def _lines(rows: dict[str, object]) -> None:
    # Values come from outside (OS, CPU and model names, paths): plain or a code span.
    def show(value: object) -> str:
        text = for_visitor(value, settings=settings)
        return text if isinstance(value, _Ours) else inline(text)

    st.markdown("\n".join(f"- **{name}:** {show(value)}" for name, value in rows.items()))


def _unload(backend) -> None:
    # unload() waits for the generation lock: a generation running in another session
    # finishes first, then the weights go.
    with st.spinner("Waiting for running generations to finish, then unloading…"):
        dropped = backend.unload()
    # Draw the page again so the sidebar's status (drawn before this page) says so too.
    st.session_state[UNLOADED_KEY] = dropped
    st.rerun()


def _pipeline_section(backend) -> None:
    state = backend.state
    loaded = backend.loaded
    rows: dict[str, object] = {"State": state, "Model": backend.model}
    if state == "loading":
        rows["Loading for"] = f"{backend.loading_elapsed:.0f} s · {load_text(backend)}"
    if loaded is not None:
        vae = loaded.vae_state
        tiling = f"on, {vae['tile_px']} px tiles" if vae["tiling"] else "off"
        rows |= {
            "Device · dtype": f"{loaded.choice.device} · {loaded.choice.dtype}",
            "Load time": f"{loaded.load_seconds:.1f} s",
            "Memory plan": loaded.plan.summary if loaded.plan else "default",
            "VAE slicing": "on" if vae["slicing"] else "off",
            "VAE tiling": tiling,
            "Memory held by the weights": f"≈ {_gb(loaded.held_bytes)}",
            "torch.compile": "on (SD_COMPILE)" if loaded.compiled else "off",
        }
        if loaded.plan is not None and loaded.plan.drop_t5:
            rows["T5"] = f"not loaded: {DROP_T5_NOTE}"
    elif backend.last_load_error:
        st.warning(
            "The last load failed: " + for_visitor(backend.last_load_error, settings=settings)
        )
    _lines(rows)


def _memory_chart(facts) -> None:
    names = ["RAM"]
    used = [facts.ram_total_bytes - facts.ram_available_bytes]
    free = [facts.ram_available_bytes]
    for gpu in facts.gpus:
        names.append(f"GPU {gpu.index} VRAM")
        used.append(gpu.total_bytes - gpu.free_bytes)
        free.append(gpu.free_bytes)
    st.bar_chart(
        {
            "memory": names,
            "used (GB)": [round(n / 1e9, 2) for n in used],
            "free (GB)": [round(n / 1e9, 2) for n in free],
        },
        x="memory",
        y=["used (GB)", "free (GB)"],
        horizontal=True,
        stack=True,
        height=80 + 40 * len(names),
    )


def _model_section(backend) -> None:
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
        load_with_status(backend)
    if unload_col.button(
        "Unload model", key="unload_model", icon=":material/eject:", width="stretch"
    ):
        _unload(backend)
    _pipeline_section(backend)


def _cancel(backend, entry_id: int) -> None:
    if backend.queue.cancel(entry_id, by=visitor.id):
        st.toast("Cancelled: its owner is told so.", icon=":material/cancel:")


@st.fragment(run_every="2s")
def _queue_section(backend) -> None:
    """The fair queue: everyone sees how busy it is; admins see who, what, since when."""
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
            "Cancel", key=f"cancel_{entry.id}", on_click=_cancel, args=(backend, entry.id)
        )


def _remote_section(backend) -> None:
    st.subheader("Remote backend")
    st.caption("Images are made by the remote service; this machine only sends requests.")
    _lines(dict(remote_facts(backend.describe())))


def _device_section(facts) -> None:
    st.subheader("Device")
    if facts.choice is None:
        st.error(for_visitor(facts.choice_error, settings=settings))
        return
    _lines(
        {
            "Device": f"{facts.choice.device} ({facts.choice.device_reason})",
            "dtype": f"{facts.choice.dtype} ({facts.choice.dtype_reason})",
        }
    )


def _plan_section(backend, settings, facts) -> None:
    st.subheader("Memory plan")
    plan = memory_plan(settings, facts)
    is_demo = settings.model == DEMO_MODEL
    if backend.loaded is not None and backend.loaded.plan is not None:
        # Free memory now excludes the loaded weights: show the plan chosen at load time.
        _show_plan(backend.loaded.plan, "In force (chosen at load): ")
    elif plan is not None:
        _show_plan(plan, "Demo model: " if is_demo else "")
    if plan is not None and is_demo:
        _show_plan(memory_plan(settings, facts, sd35=True), f"{full_size_label(settings)} here: ")
        st.caption(
            f"SD_MEMORY={settings.memory} · SD_OFFLOAD={settings.offload or 'unset'} · "
            f"SD_DROP_T5={'unset' if settings.drop_t5 is None else settings.drop_t5} · "
            f"SD_VAE_TILE={settings.vae_tile}. Applied at the next load."
        )
    _memory_chart(facts)


visitor = require_visitor()
st.title("Hardware")
try:
    settings = current_settings()
    backend = get_backend(settings)
except SettingsError as exc:
    st.error(for_visitor(exc))
    st.stop()
if note := family_for(settings).note:  # which model family's rules apply, when guessed
    st.info(note)

if backend.name == "remote":
    _remote_section(backend)
    if importlib.util.find_spec("torch") is None:
        # The light install (requirements.txt, Streamlit Community Cloud) has no torch.
        st.info("torch is not installed here (remote-only install): no local GPU facts.")
        st.stop()
else:
    _model_section(backend)
    _queue_section(backend)

facts = gather_facts(settings)
_device_section(facts)
if backend.name != "remote":
    _plan_section(backend, settings, facts)

st.subheader("GPU")
if not facts.gpus:
    mps = "available" if facts.mps_available else "not available"
    st.markdown(f"No CUDA GPU (CUDA in this torch: {facts.cuda_version or 'none'}). MPS: {mps}.")
for gpu in facts.gpus:
    _lines(
        {
            f"GPU {gpu.index}": f"{gpu.name} (compute capability {gpu.capability})",
            "VRAM": f"{_gb(gpu.free_bytes)} free of {_gb(gpu.total_bytes)}",
            "Held by this app": _gb(gpu.held_bytes),
        }
    )
if facts.gpus:
    st.caption(f"CUDA {facts.cuda_version}")

st.subheader("CPU and RAM")
_lines(
    {
        "CPU": facts.cpu.model,
        "Cores": f"{facts.cpu.physical_cores or '?'} physical, {facts.cpu.logical_cores} logical",
        "Native bfloat16": "yes" if facts.cpu.native_bf16 else "no",
        "RAM": f"{_gb(facts.ram_available_bytes)} available of {_gb(facts.ram_total_bytes)}",
    }
)

st.subheader("Software")
_lines({"OS": facts.os, "Python": facts.python, **facts.versions})

st.subheader("Hugging Face")
hub = hub_facts(settings)
rows = {
    "Token configured": "yes" if hub.token_configured else "no",
    "Cache": hub.cache_dir,
}
if hub.cached_bytes is not None:
    rows["Model files"] = f"{_gb(hub.cached_bytes)} in {hub.cached_files} files"
if hub.revision:
    rows["Cached revision"] = hub.revision[:12]
rows["Model"] = _Ours(hub.note)
_lines(rows)
if hub.problem:
    st.error(for_visitor(hub.problem, settings=settings))
