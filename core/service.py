"""The one Streamlit touch in core: the process-wide backend behind `st.cache_resource`,
and the settings it is built from (environment, `.env`, and the root keys of the secrets).

`st.cache_resource` hands the same object to every session, which is what a 16 GB
pipeline needs; the object is thread-safe (`LocalBackend` serializes generations and
loads once), and loading itself starts only on the first generation. Everything else
Streamlit-side lives in the `ui` package beside `pages/`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import streamlit as st

from core.generation import Backend
from core.local import LocalBackend
from core.memory import MemoryOptions
from core.models import AUTO, get_family
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


@st.cache_resource(show_spinner=False)
def _local_backend(
    model: str,
    device: str,
    dtype: str,
    memory: MemoryOptions | None = None,
    compile: str = "auto",
    family: str = AUTO,
    lora_dir: str | None = None,
    data_dir: Path | None = None,
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
        lora_dir=lora_dir,
        # The compile cache is kept under SD_DATA_DIR, so a restart reuses compiled code.
        compile_cache=data_dir,
    )


@st.cache_resource(show_spinner=False)
def _remote_backend(
    url: str | None, provider: str | None, model: str, image_to_image: bool | None = None
) -> Backend:
    # Shared by every session: it holds no model, only the record of recent latencies.
    from core.remote import RemoteBackend  # only remote mode pays for its import

    return RemoteBackend(
        url=url,
        provider=provider,
        model=model,
        token_provider=lambda: current_settings().hf_token,
        image_to_image=image_to_image,
    )


def get_backend(settings: Settings | None = None) -> Backend:
    """Return the process-wide backend for the current settings (nothing is loaded yet)."""
    settings = settings or current_settings()
    if settings.backend == "remote":
        return _remote_backend(
            settings.remote_url, settings.provider, settings.model, settings.image_to_image
        )
    return _local_backend(
        settings.model,
        settings.device,
        settings.dtype,
        MemoryOptions.from_settings(settings),
        settings.compile,
        settings.model_family,
        str(settings.lora_dir) if settings.lora_dir else None,
        settings.data_dir,
    )
