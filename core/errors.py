"""Turn model-loading failures into messages that say what happened and the fix."""

from __future__ import annotations

from collections.abc import Iterator

from core.safe_text import inline, quote


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

    # SD_MODEL is outside text in a message pages render as markdown: a plain hub id reads
    # as is, anything markdown would read (`:red[**x**]`, links) is quoted as code.
    name = inline(model)
    page = f"https://huggingface.co/{model}"
    page = page if name == model else quote(page)
    token_fix = (
        "Create a read token at https://huggingface.co/settings/tokens and set HF_TOKEN "
        "in `.env` or `.streamlit/secrets.toml`, then click Generate again."
    )
    for err in _chain(exc):
        if isinstance(err, hub.GatedRepoError):
            return (
                f"{name} is a gated model and this token has not been granted access. "
                f"Open {page}, log in with the account the token belongs to, accept the "
                "licence, then click Generate again."
            )
        if isinstance(err, hub.RepositoryNotFoundError):
            if not has_token:
                return (
                    f"The Hub refused {name} without a token: it is gated (SD3.5 needs a "
                    f"licence accepted at {page}) or does not exist. {token_fix}"
                )
            if _status(err) == 401:
                return f"The Hub rejected HF_TOKEN as invalid or expired. {token_fix}"
            return (
                f"{name} was not found on the Hub, or this token cannot see it. Check "
                "SD_MODEL (a hub id like stabilityai/stable-diffusion-3.5-medium, or a local "
                "folder) and that the token's account has accepted the licence."
            )
        if isinstance(err, hub.HfHubHTTPError) and _status(err) == 401:
            return f"The Hub rejected HF_TOKEN as invalid or expired. {token_fix}"
        if isinstance(err, hub.OfflineModeIsEnabled | hub.LocalEntryNotFoundError):
            return (
                f"The Hugging Face Hub cannot be reached (offline, or HF_HUB_OFFLINE=1) and "
                f"{name} is not fully in the local cache. Connect to the internet for the "
                "first download (~16 GB), point SD_MODEL at a local copy, or set "
                "SD_MODEL=demo to try the app with the offline demo model."
            )
        if _is_transport_error(err):
            return (
                f"The Hugging Face Hub could not be reached while loading {name}. Check the "
                "network (or proxy), or set SD_MODEL=demo to use the offline demo model."
            )
    return None


# A pipeline component's folder holds one of these (diffusers models, schedulers,
# transformers models, tokenizers); a folder with none of them cannot be loaded.
_COMPONENT_FILES = (
    "config.json",
    "scheduler_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "vocab.json",
    "spiece.model",
)
_MAX_INDEX_BYTES = 1_000_000  # a model_index.json is a few hundred bytes


def looks_local(model: str) -> bool:
    """Whether SD_MODEL names a folder on this machine rather than a Hub id."""
    from pathlib import Path

    return (
        model.startswith((".", "/", "~"))
        or Path(model).expanduser().exists()
        or model.count("/") > 1
    )


def _folder_problem(path, model: str) -> str | None:
    """What makes an existing folder unloadable as a diffusers pipeline, or None."""
    import json

    index_path = path / "model_index.json"
    fix = "Point SD_MODEL at a folder saved with `save_pretrained`, or at a hub id."
    if not path.is_dir() or not index_path.is_file():
        return (
            f"SD_MODEL={quote(model, 300)} is not a diffusers pipeline folder (no "
            f"model_index.json). {fix}"
        )
    try:
        if index_path.stat().st_size > _MAX_INDEX_BYTES:
            raise ValueError("too large")
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if not isinstance(index, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return (
            f"SD_MODEL={quote(model, 300)} has a model_index.json that cannot be read "
            f"({quote(exc, 100)}). Save the pipeline again with `save_pretrained`, or "
            "download it again."
        )
    missing = []
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or None in entry:
            continue  # metadata, or a component saved as absent (such as a dropped T5)
        folder = path / name
        if not folder.is_dir() or not any((folder / f).is_file() for f in _COMPONENT_FILES):
            missing.append(name)
    if missing:
        return (
            f"SD_MODEL={quote(model, 300)} is incomplete: model_index.json lists "
            f"{', '.join(quote(m, 40) for m in missing[:6])} but "
            f"{'that folder has' if len(missing) == 1 else 'those folders have'} no "
            "configuration. Copy or download the whole pipeline folder again."
        )
    return None


def explain_local_path(model: str) -> str | None:
    """Return a message when SD_MODEL names a local folder that cannot be a pipeline.

    Checked before loading (and by the Hardware page): a missing folder, no or broken
    model_index.json, a component folder without its configuration.
    """
    from pathlib import Path

    if not looks_local(model):
        return None
    path = Path(model).expanduser()
    if not path.exists():
        return (
            f"SD_MODEL={quote(model, 300)} looks like a local folder, but that folder does not "
            "exist. Fix the path, or use a hub id such as "
            "stabilityai/stable-diffusion-3.5-medium."
        )
    return _folder_problem(path, model)


def explain_local_load_error(exc: BaseException, *, model: str) -> str | None:
    """A load from a local folder failed past the checks above: say so, with the reason.

    diffusers and transformers raise OSError / ValueError / KeyError / JSON errors for a
    damaged file (a truncated safetensors, a config with a wrong field).
    """
    if not looks_local(model):
        return None
    if not isinstance(exc, OSError | ValueError | KeyError | TypeError | EOFError):
        return None
    return (
        f"SD_MODEL={quote(model, 300)} could not be loaded: a file in the folder is damaged or "
        f"does not match the pipeline ({quote(f'{type(exc).__name__}: {exc}', 160)}). "
        "Copy or download the whole pipeline folder again."
    )
