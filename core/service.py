"""The one Streamlit touch in core: the process-wide backend behind `st.cache_resource`.

`st.cache_resource` hands the same object to every session, which is what a 16 GB
pipeline needs; the object is thread-safe (`LocalBackend` serializes generations and
loads once), and loading itself starts only on the first generation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import streamlit as st

from core.auth import Visitor, sign_in_enabled, visitor_from
from core.device import DeviceError
from core.generation import Backend, GenerationError
from core.local import LocalBackend
from core.memory import MemoryOptions
from core.models import AUTO, get_family
from core.safe_text import for_visitor
from core.settings import Settings, load_settings

log = logging.getLogger(__name__)


def _root_secrets() -> dict[str, object]:
    """Top-level values of `.streamlit/secrets.toml`, or nothing when there is none."""
    try:
        return {k: v for k, v in st.secrets.items() if not isinstance(v, Mapping)}
    except FileNotFoundError:
        return {}


def current_settings() -> Settings:
    """Settings as they stand now; raise `SettingsError` with the fix for a bad value."""
    return load_settings(secrets=_root_secrets())


def auth_secrets() -> Mapping[str, object]:
    """The `[auth]` section of the secrets (empty when sign-in is off)."""
    try:
        section = st.secrets.get("auth")
    except FileNotFoundError:
        return {}
    return section if isinstance(section, Mapping) else {}


def current_visitor(settings: Settings | None = None) -> Visitor:
    """Who is running this script: from `st.user` when sign-in is on, else the local user.

    Raise `SettingsError` for a bad SD_ALLOWED_USERS / SD_ADMINS value.
    """
    settings = settings or current_settings()
    on = sign_in_enabled({"auth": auth_secrets()})
    # Without an [auth] section st.user has no is_logged_in at all: read it only when on.
    claims = st.user.to_dict() if on else None
    return visitor_from(
        claims, sign_in_on=on, allowed_users=settings.allowed_users, admins=settings.admins
    )


@st.cache_resource(show_spinner=False)
def _local_backend(
    model: str,
    device: str,
    dtype: str,
    memory: MemoryOptions | None = None,
    compile: bool = False,
    family: str = AUTO,
) -> LocalBackend:
    # The token is read at load time, not baked into the cache key: fixing HF_TOKEN
    # after a refused download works on the next click, without a restart.
    return LocalBackend(
        model=model,
        device=device,
        dtype=dtype,
        token_provider=lambda: current_settings().hf_token,
        memory=memory,
        compile=compile,
        # Read at each Generate, so a changed SD_MAX_QUEUED_PER_USER needs no reload.
        max_queued_per_user=lambda: current_settings().max_queued_per_user,
        # SD_MODEL_FAMILY when set; `auto` lets the loader work it out from the model.
        family=None if family == AUTO else get_family(family),
    )


@st.cache_resource(show_spinner=False)
def _remote_backend(url: str | None, provider: str | None, model: str) -> Backend:
    # Shared by every session: it holds no model, only the record of recent latencies.
    from core.remote import RemoteBackend  # only remote mode pays for its import

    return RemoteBackend(
        url=url,
        provider=provider,
        model=model,
        token_provider=lambda: current_settings().hf_token,
    )


def get_backend(settings: Settings | None = None) -> Backend:
    """Return the process-wide backend for the current settings (nothing is loaded yet)."""
    settings = settings or current_settings()
    if settings.backend == "remote":
        return _remote_backend(settings.remote_url, settings.provider, settings.model)
    return _local_backend(
        settings.model,
        settings.device,
        settings.dtype,
        MemoryOptions.from_settings(settings),
        settings.compile,
        settings.model_family,
    )


STATUS_SLOT_KEY = "_sidebar_status_slot"


def status_line(backend: Backend, activity: str = "") -> str:
    """The sidebar's status: state, where it runs, and what it is doing now."""
    facts = backend.describe()
    where = f" on {facts['device']} · {facts['dtype']}" if "device" in facts else ""
    doing = activity or facts.get("activity", "")
    return f"Status: {facts['state']}{where}" + (f" · {doing}" if doing else "")


def draw_sidebar_status(backend: Backend) -> None:
    """Draw the status line in a slot the pages can rewrite while they load or generate."""
    slot = st.empty()
    st.session_state[STATUS_SLOT_KEY] = slot
    slot.caption(status_line(backend))


def refresh_sidebar(backend: Backend, activity: str = "") -> None:
    """Rewrite the sidebar status (the sidebar is drawn before the page runs)."""
    slot = st.session_state.get(STATUS_SLOT_KEY)
    if slot is not None:
        slot.caption(status_line(backend, activity))


def load_text(backend: Backend) -> str:
    """What the load is doing, e.g. "Downloading: 1.2 GB of 16.3 GB · 38 MB/s · 7 min left"."""
    status = getattr(backend, "load_status", None)
    text = status.text() if status is not None else ""
    return text or f"Loading model… {backend.loading_elapsed:.0f} s"


def _draw_load_progress(backend: Backend, bar) -> None:
    status = getattr(backend, "load_status", None)
    fraction = status.fraction if status is not None else 0.0
    bar.progress(fraction, text=load_text(backend))


def cancel_button(backend: Backend) -> None:
    """A Cancel button for the running load; the click is handled before the next run."""
    if hasattr(backend, "cancel_load"):
        st.button(
            "Cancel download",
            key="cancel_load",
            icon=":material/cancel:",
            on_click=backend.cancel_load,
        )


def load_with_status(backend: Backend) -> float | None:
    """Load the model in the background, showing bytes, speed and time left as it goes.

    Shared by the Generate page (first generation) and the Hardware page (Load model now).
    Return the load's seconds, or None when it failed: the reason and its fix are shown
    as an error on the page itself, not inside a collapsed box.
    """
    future = backend.load_async()
    cancel_button(backend)
    bar = st.progress(0.0, text=load_text(backend))
    try:
        while not future.done():
            _draw_load_progress(backend, bar)
            refresh_sidebar(backend)
            time.sleep(0.25)
    finally:
        bar.empty()
    try:
        loaded = future.result()
    except (GenerationError, DeviceError) as exc:
        refresh_sidebar(backend)
        message = for_visitor(f"The model could not be loaded. {exc}", settings=current_settings())
        st.error(message, icon=":material/error:")
        return None
    refresh_sidebar(backend)
    st.caption(
        f"Model loaded in {loaded.load_seconds:.1f} s, weights read into memory: the first "
        "image runs at full speed."
    )
    return loaded.load_seconds


@st.fragment(run_every=1.0)
def show_running_load(backend: Backend) -> None:
    """Show a load another session (or an earlier page) started, without blocking the page.

    The download runs once per process and survives reloads; this redraws its progress
    every second and reruns the whole page when it ends.
    """
    if backend.state != "loading":
        st.rerun()  # finished (or failed) since the last draw: show the page as it is now
    cancel_button(backend)
    status = getattr(backend, "load_status", None)
    fraction = status.fraction if status is not None else 0.0
    st.progress(fraction, text=load_text(backend))
