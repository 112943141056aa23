"""The Hardware page's candidate memory plans (issue 20): every plan the planner weighed,
with its predicted peak, the RAM an offload needs, whether it fits and what it trades, the
chosen one marked; then the VAE and compile decisions and why."""

from __future__ import annotations

import streamlit as st

from core.compile import decide_compile
from core.generation import LoadFacts
from core.memory import MemoryPlan
from core.settings import Settings
from core.units import human_bytes

CHOSEN = "▶"
FITS = {True: "✓", False: "✗", None: "?"}


def candidate_rows(plan: MemoryPlan, *, cuda: bool) -> list[dict[str, str]]:
    """One row per candidate, in the order tried (the chosen one marked ▶)."""
    rows = []
    for c in plan.candidates:
        row = {
            "": CHOSEN if c.name == plan.chosen else "",
            "Plan": c.name,
            "Peak (GPU)" if cuda else "Peak (RAM)": human_bytes(c.peak_bytes),
        }
        if cuda:
            row["RAM for offloaded weights"] = human_bytes(c.ram_bytes) if c.ram_bytes else "–"
        row["Fits"] = FITS[c.fits]
        row["What it trades"] = c.trades
        rows.append(row)
    return rows


def candidates_table(plan: MemoryPlan | None, *, cuda: bool, label: str = "") -> None:
    """The candidate plans with their numbers, and the planner's notes. A refused setting
    has none (the plan's own message above says why)."""
    if plan is None or not plan.candidates:
        return
    free = "unknown" if plan.available_bytes is None else human_bytes(plan.available_bytes)
    st.caption(
        f"{label}candidate plans, in the order tried (quality first); the first that fits "
        f"is taken. Free {'GPU memory' if cuda else 'RAM'}: {free}."
    )
    st.table(candidate_rows(plan, cuda=cuda))
    for note in plan.notes:
        st.caption(f"Note: {note}")


def vae_text(plan: MemoryPlan | None) -> str:
    """The VAE decision in words: tiles or not, and why (the reason starts with which)."""
    if plan is None:
        return "no plan yet"
    return plan.vae_reason or (f"{plan.vae_tile}-px tiles" if plan.vae_tile else "untiled")


def compile_text(loaded: LoadFacts | None, settings: Settings, device: str | None) -> str:
    """The compile decision in words: loaded facts when there are, else the next load's."""
    if loaded is not None:
        if not loaded.compiled:
            return f"off ({loaded.compile_reason or 'SD_COMPILE'})"
        state = "first image compiling" if loaded.compiling else "compiled"
        if loaded.first_image_seconds is not None:
            state += f" (first image {loaded.first_image_seconds:.1f} s)"
        return f"on, each transformer block: {state}; {loaded.compile_reason}"
    if device is None:
        return "no device"
    try:
        on, reason = decide_compile(settings.compile, device)
    except ValueError as exc:  # a bad SD_COMPILE is reported by the settings check
        return str(exc)
    return f"{'on' if on else 'off'} at the next load ({reason})"


def cache_text(loaded: LoadFacts | None) -> str | None:
    """Where compiled code is kept and whether an earlier start left some; None: not used."""
    if loaded is None or not loaded.compile_cache:
        return None
    again = "reused from an earlier start" if loaded.compile_cache_reused else "new this start"
    return f"{loaded.compile_cache} ({again})"
