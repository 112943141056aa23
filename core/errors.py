"""Turn model-loading failures into messages that say what happened and the fix."""

from __future__ import annotations

from collections.abc import Iterator


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield `exc` and every exception it was raised from (diffusers wraps hub errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


# huggingface_hub's HTTP client (httpx) reports a refused, dropped or timed-out connection
# with these classes, which are not OSError subclasses.
_TRANSPORT_ERRORS = {"TransportError", "NetworkError", "TimeoutException", "ProtocolError"}


def _is_transport_error(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return any(cls.__name__ in _TRANSPORT_ERRORS for cls in type(exc).__mro__)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def explain_load_error(exc: BaseException, *, model: str, has_token: bool) -> str | None:
    """Return a user-facing message with the remedy, or None for a failure we cannot explain."""
    from huggingface_hub import errors as hub

    page = f"https://huggingface.co/{model}"
    token_fix = (
        "Create a read token at https://huggingface.co/settings/tokens and set HF_TOKEN "
        "in `.env` or `.streamlit/secrets.toml`, then click Generate again."
    )
    for err in _chain(exc):
        if isinstance(err, hub.GatedRepoError):
            return (
                f"{model} is a gated model and this token has not been granted access. "
                f"Open {page}, log in with the account the token belongs to, accept the "
                "licence, then click Generate again."
            )
        if isinstance(err, hub.RepositoryNotFoundError):
            if not has_token:
                return (
                    f"The Hub refused {model} without a token: it is gated (SD3.5 needs a "
                    f"licence accepted at {page}) or does not exist. {token_fix}"
                )
            if _status(err) == 401:
                return f"The Hub rejected HF_TOKEN as invalid or expired. {token_fix}"
            return (
                f"{model} was not found on the Hub, or this token cannot see it. Check "
                "SD_MODEL (a hub id like stabilityai/stable-diffusion-3.5-medium, or a local "
                "folder) and that the token's account has accepted the licence."
            )
        if isinstance(err, hub.HfHubHTTPError) and _status(err) == 401:
            return f"The Hub rejected HF_TOKEN as invalid or expired. {token_fix}"
        if isinstance(err, hub.OfflineModeIsEnabled | hub.LocalEntryNotFoundError):
            return (
                f"The Hugging Face Hub cannot be reached (offline, or HF_HUB_OFFLINE=1) and "
                f"{model} is not fully in the local cache. Connect to the internet for the "
                "first download (~16 GB), point SD_MODEL at a local copy, or set "
                "SD_MODEL=demo to try the app with the offline demo model."
            )
        if _is_transport_error(err):
            return (
                f"The Hugging Face Hub could not be reached while loading {model}. Check the "
                "network (or proxy), or set SD_MODEL=demo to use the offline demo model."
            )
    return None


def explain_local_path(model: str) -> str | None:
    """Return a message when SD_MODEL names a local folder that cannot be a pipeline."""
    from pathlib import Path

    path = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or path.exists() or model.count("/") > 1
    if not looks_local:
        return None
    if not path.exists():
        return (
            f"SD_MODEL={model} looks like a local folder, but it does not exist. Fix the "
            "path, or use a hub id such as stabilityai/stable-diffusion-3.5-medium."
        )
    if not path.is_dir() or not (path / "model_index.json").is_file():
        return (
            f"SD_MODEL={model} is not a diffusers pipeline folder (no model_index.json). "
            "Point it at a folder saved with `save_pretrained`, or at a hub id."
        )
    return None
