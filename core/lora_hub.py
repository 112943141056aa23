"""LoRAs named by a Hugging Face Hub id: `owner/repo` or `owner/repo/file.safetensors`.

- **Names**: a Hub LoRA's name is its canonical id `owner/repo/path/file.safetensors` (the
  `.safetensors` suffix is what tells it from a folder LoRA, whose name never carries it).
  `owner/repo` alone means the repo's `pytorch_lora_weights.safetensors`, the file
  diffusers' `save_lora_weights` and training scripts write. Ids are checked strictly before
  anything is asked of the Hub: repo-id characters only, at most MAX_LORA_NAME_CHARS in all,
  `.safetensors` only (a `.bin`/`.pt`/… id is refused by name: diffusers would unpickle it).
- **Download**: one file with `huggingface_hub.hf_hub_download` into the Hugging Face cache
  (never SD_LORA_DIR), with the app's HF_TOKEN. Its size is asked first (the Hub's
  metadata, a HEAD request with a timeout) and a file over MAX_HUB_BYTES is not downloaded;
  the size is checked again on disk, and the file is then read by `core.lora.read_lora`
  like a folder LoRA (header caps, float tensors, SD3 keys, A1111 hash).
- **No Hub**: offline, unreachable, a missing repo or file, a gated or private repo each
  give one `LoraError` line naming the id and the fix. A file already in the cache is used
  when the Hub cannot be reached.

diffusers is never handed a Hub id: its loader falls back to a pickle load.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from core.generation import MAX_LORA_NAME_CHARS
from core.lora import PICKLE_SUFFIXES, SUFFIX, LoraError, LoraFile, pickle_refusal
from core.safe_text import quote
from core.units import human_bytes

DEFAULT_FILE = "pytorch_lora_weights.safetensors"
MAX_HUB_BYTES = 2**30  # 1 GiB: SD3.5 Medium LoRAs are 10–700 MB
TIMEOUT_SECONDS = 10.0  # the size request; the body uses HF_HUB_DOWNLOAD_TIMEOUT per read
MAX_FILE_DEPTH = 3  # folders inside the repo above the file
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def is_hub_name(name: str) -> bool:
    """Whether a LoRA name is a Hub id (a folder LoRA's name has no `.safetensors`)."""
    return name.lower().endswith(SUFFIX)


def _segment_ok(part: str) -> bool:
    return bool(_SEGMENT.fullmatch(part)) and ".." not in part and "--" not in part


def hub_id(text: str) -> str:
    """The canonical id (`owner/repo/file.safetensors`) of a typed Hub LoRA; raise
    `LoraError` saying what is wrong. Nothing is asked of the Hub."""
    raw = text.strip() if isinstance(text, str) else ""
    shown = quote(raw, 80)
    if raw.startswith(("https://", "http://")):
        raise LoraError(
            f"Hub LoRA {shown}: type the id, not a link (owner/repo or "
            "owner/repo/file.safetensors)."
        )
    parts = raw.split("/")
    if len(parts) == 2 and not parts[1].lower().endswith(SUFFIX):
        parts.append(DEFAULT_FILE)
    if not 3 <= len(parts) <= 3 + MAX_FILE_DEPTH or not all(_segment_ok(p) for p in parts):
        raise LoraError(
            f"Hub LoRA {shown} is not a Hub id: write owner/repo or owner/repo/file.safetensors "
            "(letters, digits, '-', '_' and '.')."
        )
    suffix = Path(parts[-1]).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise LoraError(f"Hub LoRA {shown} is {pickle_refusal(suffix)}.")
    if suffix != SUFFIX:
        raise LoraError(f"Hub LoRA {shown}: only .safetensors files are downloaded.")
    canonical = "/".join(parts)
    if len(canonical) > MAX_LORA_NAME_CHARS:
        raise LoraError(
            f"Hub LoRA {shown}: the id with its file name is {len(canonical)} characters; "
            f"at most {MAX_LORA_NAME_CHARS}."
        )
    return canonical


def checked_name(name: str) -> str:
    """`name` when it is a canonical Hub LoRA name (as requests and records carry it);
    raise `LoraError` otherwise. Nothing is asked of the Hub."""
    if hub_id(name) != name:
        raise LoraError(
            f"Hub LoRA {quote(name, 80)} is not a Hub id: write owner/repo/file.safetensors."
        )
    return name


def split_id(name: str) -> tuple[str, str]:
    """(repo id, file path in the repo) of a canonical Hub LoRA name."""
    owner, repo, filename = name.split("/", 2)
    return f"{owner}/{repo}", filename


def hub_page(name: str) -> str:
    """Where a Hub LoRA comes from, for messages."""
    repo, filename = split_id(name)
    return f"https://huggingface.co/{repo}/blob/main/{filename}"


class HubLoras:
    """Download Hub LoRA files for one backend. `endpoint` None: huggingface_hub's
    (HF_ENDPOINT); `cache_dir` None: the Hugging Face cache (HF_HOME / HF_HUB_CACHE)."""

    def __init__(
        self,
        *,
        token_provider: Callable[[], str | None] = lambda: None,
        endpoint: str | None = None,
        cache_dir: str | Path | None = None,
        max_bytes: int = MAX_HUB_BYTES,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self._token_provider = token_provider
        self.endpoint = endpoint
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.max_bytes = max_bytes
        self.timeout = timeout

    def cached(self, name: str) -> Path | None:
        """The file from the cache when it was downloaded before (no network)."""
        from huggingface_hub import try_to_load_from_cache

        repo, filename = split_id(checked_name(name))
        found = try_to_load_from_cache(repo, filename, cache_dir=self.cache_dir)
        return Path(found) if isinstance(found, str) else None

    def file(self, name: str) -> LoraFile:
        """Download the Hub LoRA `name` (or take it from the cache) and return it as a file
        for `LoraCache.get`; raise `LoraError` in one line naming the id and the fix."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

        name = checked_name(name)
        repo, filename = split_id(name)
        token = self._token_provider() or None
        try:
            url = hf_hub_url(repo, filename, endpoint=self.endpoint)
            meta = get_hf_file_metadata(
                url, token=token, timeout=self.timeout, endpoint=self.endpoint
            )
            if meta.size is not None and meta.size > self.max_bytes:
                raise LoraError(self._too_big(name, meta.size))
            path = Path(
                hf_hub_download(
                    repo,
                    filename,
                    cache_dir=self.cache_dir,
                    token=token,
                    endpoint=self.endpoint,
                    etag_timeout=self.timeout,
                )
            )
        except LoraError:
            raise
        except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one line
            path = self._fallback(name, exc)
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise LoraError(f"Hub LoRA {quote(name)}: the download is gone ({exc}).") from exc
        if size > self.max_bytes:
            raise LoraError(self._too_big(name, size))
        return LoraFile(name=name, path=path, size=size)

    def _too_big(self, name: str, size: int) -> str:
        return (
            f"Hub LoRA {quote(name)} is {human_bytes(size)}; Hub LoRAs over "
            f"{human_bytes(self.max_bytes)} are not downloaded (is this a whole model?)."
        )

    def _fallback(self, name: str, exc: Exception) -> Path:
        """The cached copy when the Hub is out of reach, else a `LoraError` saying why."""
        message = explain(name, exc, has_token=bool(self._token_provider()))
        if message.startswith("The Hub"):  # unreachable or offline: a cached copy will do
            cached = self.cached(name)
            if cached is not None:
                return cached
        raise LoraError(message) from exc


def explain(name: str, exc: BaseException, *, has_token: bool) -> str:
    """One line naming the Hub LoRA and the fix for a failed Hub request."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    shown = quote(name)
    repo, filename = split_id(name)
    page = f"https://huggingface.co/{repo}"
    if isinstance(exc, GatedRepoError):
        return (
            f"Hub LoRA {shown} is gated: accept its terms at {page} and set HF_TOKEN to a "
            "token of that account, or pick another LoRA."
        )
    if isinstance(exc, RepositoryNotFoundError):
        token = "" if has_token else " (if it is private, set HF_TOKEN)"
        return f"Hub LoRA {shown}: no repo {quote(repo)} on the Hub{token}; check the id."
    if isinstance(exc, EntryNotFoundError | RevisionNotFoundError):
        return (
            f"Hub LoRA {shown}: the repo has no file {quote(filename)}; see its files at "
            f"{page}/tree/main and write owner/repo/file.safetensors."
        )
    if isinstance(exc, OfflineModeIsEnabled | LocalEntryNotFoundError):
        return (
            f"The Hub cannot be reached (offline: HF_HUB_OFFLINE, or no network) and Hub LoRA "
            f"{shown} was not downloaded before; connect, or put the file in SD_LORA_DIR."
        )
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HfHubHTTPError) and status in (401, 403):
        return (
            f"Hub LoRA {shown}: the Hub refused access ({status}); set HF_TOKEN to a token "
            f"that may read {page}."
        )
    if isinstance(exc, HfHubHTTPError) and status is not None:
        return f"Hub LoRA {shown}: the Hub answered {status}; try again later."
    return (
        f"The Hub cannot be reached for Hub LoRA {shown} ({type(exc).__name__}); check the "
        "network (or HF_ENDPOINT), or put the file in SD_LORA_DIR."
    )
