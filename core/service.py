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
    )


def load_with_status(backend: Backend) -> float | None:
    """Load the model in the background, showing the elapsed time in an `st.status`.

    Shared by the Generate page (first generation) and the Hardware page (Load model now).
    Return the load's seconds, or None when it failed (the error is shown with its fix).
    """
    with st.status("Loading model…", expanded=False) as status:
        future = backend.load_async()
        while not future.done():
            status.update(label=f"Loading model… {backend.loading_elapsed:.0f} s")
            time.sleep(0.25)
        try:
            loaded = future.result()
        except (GenerationError, DeviceError) as exc:
            status.update(label="The model could not be loaded", state="error")
            st.error(str(exc))
            return None
        status.update(label=f"Model loaded in {loaded.load_seconds:.1f} s", state="complete")
    return loaded.load_seconds
