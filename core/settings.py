"""User-facing settings, read from the environment, `st.secrets` and a `.env` file."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from dotenv import dotenv_values

from core.models import AUTO, DEMO, DEMO_MODEL, family_ids
from core.quant_plan import QUANT_CHOICES
from core.safe_text import SHOW_PATHS_CHOICES, display_url, quote

log = logging.getLogger(__name__)

APP_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "stabilityai/stable-diffusion-3.5-medium"
DOTENV_PATH = APP_ROOT / ".env"

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
MEMORY_MODES = ("auto", "manual")
OFFLOADS = ("none", "model", "sequential")
_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLEANS |= {"0": False, "false": False, "no": False, "off": False}
# VAE tile side in pixels when tiling. Measured on the full-size SD3.5 VAE
# (bench/vae_memory.py): 512-pixel tiles decode 1024² in 1.8 GB instead of 4.6 GB on a CPU;
# on an H200 the tiled decode takes 0.218 s instead of 0.088 s and its pixels differ from
# diffusers' own. SD_VAE_TILE=auto (the default) tiles only when the memory plan says an
# untiled decode would not fit with margin (core.quant_plan.choose_vae_tile).
DEFAULT_VAE_TILE = 512
VAE_TILE_AUTO = "auto"
# SD_COMPILE: auto (on for CUDA, off elsewhere: core.compile.decide_compile), true, false.
COMPILE_CHOICES = ("auto", "true", "false")
BACKENDS = ("local", "remote")
DEFAULT_MAX_QUEUED_PER_USER = 2
MAX_QUEUED_PER_USER = 100
MAX_DAILY_LIMIT = 100_000
# SD_MODEL_FAMILY: `auto` (from SD_MODEL: its hub id or its folder's config) or a family id.
MODEL_FAMILIES = (AUTO, *family_ids())


class SettingsError(ValueError):
    """A setting holds a value the app cannot use; the message names the valid ones."""


@dataclass(frozen=True)
class Settings:
    """What the app runs with. The token never appears in `repr` or logs."""

    model: str = DEFAULT_MODEL
    # Which model family's rules apply (core.models): "auto" works it out from `model`.
    model_family: str = AUTO
    device: str = "auto"
    dtype: str = "auto"
    hf_token: str | None = field(default=None, repr=False)
    data_dir: Path = APP_ROOT / "data"
    # Memory plan: SD_MEMORY=auto picks offload/drop-T5 from free memory; a value set in
    # SD_OFFLOAD or SD_DROP_T5 always wins (None = not set). SD_VAE_TILE=0 turns tiling off.
    memory: str = "auto"
    offload: str | None = None
    drop_t5: bool | None = None
    # SD_QUANT (core.quant_plan): auto lets the memory plan quantize T5 and then the
    # transformer when that is what makes the model fit; none, t5-int8, int8, fp8, nf4 force.
    quant: str = "auto"
    # Compile the transformer's blocks at load (SD_COMPILE): "auto" on CUDA only, "true",
    # "false". The first image pays for compiling; the cache under data_dir keeps it.
    compile: str = "auto"
    # SD_VAE_TILE: "auto" (tiles only when untiled would not fit), 0 (never) or a tile side.
    vae_tile: int | str = VAE_TILE_AUTO
    # Live preview while denoising (SD_PREVIEW): the generator's toggle starts in this state.
    preview: bool = True
    # Remote mode: an endpoint URL, or an Inference Providers name with `model` as the id
    # (neither: Hugging Face picks a provider for `model`).
    backend: str = "local"
    remote_url: str | None = None
    provider: str | None = None
    # Whether the remote service also runs image to image (Vary, Upscale): "auto" lets an
    # Inference Provider's mapping decide; an endpoint URL cannot be asked, so "auto"
    # offers it only with a provider ("true" / "false" decide for either).
    remote_image_to_image: str = "auto"
    # Sharing (docs: README "Sharing it with a team"). Emails and "@domain" entries, lower
    # case; empty = every signed-in user. Only read when sign-in is on (an [auth] secret).
    allowed_users: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    max_queued_per_user: int = DEFAULT_MAX_QUEUED_PER_USER
    daily_limit: int = 0  # images per user per day; 0 = unlimited
    # Seed history database (SD_HISTORY_URL), a SQLAlchemy URL; None = SQLite in data_dir.
    # It may hold a password: never in repr, logs or messages (see core.history.describe_url).
    history_url: str | None = field(default=None, repr=False)
    # SD_LORA_DIR: the folder of SD3 LoRA `.safetensors` files the generator offers (None:
    # no LoRAs). Subfolders are read too; a LoRA's name is its path below the folder.
    lora_dir: Path | None = None
    # Server paths (data/model folders, the HF cache) on the page: "auto" shows them only
    # to a visitor on this machine (core.safe_text.paths_visible); always in the log.
    show_paths: str = "auto"

    @property
    def has_token(self) -> bool:
        return bool(self.hf_token)

    @property
    def image_to_image(self) -> bool | None:
        """SD_REMOTE_IMAGE_TO_IMAGE as the remote backend takes it (None: auto)."""
        return (
            None if self.remote_image_to_image == "auto" else self.remote_image_to_image == "true"
        )


# Setting name → (Settings field, allowed values or None for free text).
_SETTINGS = {
    "SD_MODEL": ("model", None),
    "SD_MODEL_FAMILY": ("model_family", MODEL_FAMILIES),
    "SD_DEVICE": ("device", DEVICES),
    "SD_DTYPE": ("dtype", DTYPES),
    "HF_TOKEN": ("hf_token", None),
    "SD_DATA_DIR": ("data_dir", None),
    "SD_MEMORY": ("memory", MEMORY_MODES),
    "SD_OFFLOAD": ("offload", OFFLOADS),
    "SD_DROP_T5": ("drop_t5", tuple(_BOOLEANS)),
    "SD_COMPILE": ("compile", ("auto", *_BOOLEANS)),
    "SD_QUANT": ("quant", QUANT_CHOICES),
    "SD_VAE_TILE": ("vae_tile", None),
    "SD_PREVIEW": ("preview", tuple(_BOOLEANS)),
    "SD_BACKEND": ("backend", BACKENDS),
    "SD_REMOTE_URL": ("remote_url", None),
    "SD_PROVIDER": ("provider", None),
    "SD_REMOTE_IMAGE_TO_IMAGE": ("remote_image_to_image", ("auto", *_BOOLEANS)),
    "SD_ALLOWED_USERS": ("allowed_users", None),
    "SD_ADMINS": ("admins", None),
    "SD_MAX_QUEUED_PER_USER": ("max_queued_per_user", None),
    "SD_DAILY_LIMIT": ("daily_limit", None),
    "SD_HISTORY_URL": ("history_url", None),
    "SD_SHOW_PATHS": ("show_paths", SHOW_PATHS_CHOICES),
    "SD_LORA_DIR": ("lora_dir", None),
}


def _lookup(name: str, sources: list[Mapping[str, object]]) -> str | None:
    for source in sources:
        value = source.get(name)
        if value is not None and str(value).strip() != "":
            return str(value).strip()
    return None


def _vae_tile(text: str) -> int | str:
    """Parse SD_VAE_TILE: auto, 0 (no tiling) or a multiple of 64 pixels from 128 up."""
    if text.lower() == VAE_TILE_AUTO:
        return VAE_TILE_AUTO
    try:
        tile = int(text)
    except ValueError:
        tile = -1
    if tile != 0 and (tile < 128 or tile % 64):
        raise SettingsError(
            f"SD_VAE_TILE={quote(text)} is not valid; use auto (tiles only when an untiled "
            f"decode would not fit), 0 (no tiling) or a multiple of 64 pixels from 128 up, "
            f"such as {DEFAULT_VAE_TILE}."
        )
    return tile


def _count(name: str, text: str, *, low: int, high: int, meaning: str) -> int:
    """Parse a whole number in [low, high], or say which numbers are valid."""
    try:
        number = int(text)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise SettingsError(
            f"{name}={quote(text)} is not valid; use a whole number from {meaning}."
        )
    return number


def _people(name: str, text: str, *, domains: bool) -> tuple[str, ...]:
    """Parse comma-separated emails (and `@domain` entries where allowed), lower-cased."""
    entries = []
    for raw in text.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        local, at, domain = entry.rpartition("@")
        ok = bool(at) and "." in domain and " " not in entry and entry.count("@") == 1
        if ok and not local and not domains:
            ok = False
        if not ok:
            kinds = "emails or @domain entries" if domains else "emails"
            example = "alice@example.com, @example.org" if domains else "alice@example.com"
            raise SettingsError(
                f"{name} holds {quote(entry)}, which is not an email; use comma-separated "
                f"{kinds}, e.g. {example}."
            )
        entries.append(entry)
    return tuple(dict.fromkeys(entries))


def load_settings(
    *,
    environ: Mapping[str, str] | None = None,
    secrets: Mapping[str, object] | None = None,
    dotenv_path: Path | None = None,
) -> Settings:
    """Read settings: the environment wins over `st.secrets`, which wins over `.env`.

    Raise `SettingsError` naming the valid values when a choice is not one of them.
    """
    environ = os.environ if environ is None else environ
    dotenv_path = DOTENV_PATH if dotenv_path is None else dotenv_path
    dotenv = {k: v for k, v in dotenv_values(dotenv_path).items() if v is not None}
    sources: list[Mapping[str, object]] = [environ, secrets or {}, dotenv]

    values: dict[str, object] = {}
    for name, (attr, allowed) in _SETTINGS.items():
        value = _lookup(name, sources)
        if value is None:
            continue
        if allowed is not None:
            value = value.lower()
            if value not in allowed:
                raise SettingsError(
                    f"{name}={quote(value)} is not valid; use one of: {', '.join(allowed)}."
                )
        values[attr] = value
    for folder in ("data_dir", "lora_dir"):
        if folder in values:
            values[folder] = Path(str(values[folder])).expanduser()
    for flag in ("drop_t5", "preview"):
        if flag in values:
            values[flag] = _BOOLEANS[str(values[flag])]
    if values.get("remote_image_to_image", "auto") != "auto":  # one spelling: true / false
        wanted = _BOOLEANS[str(values["remote_image_to_image"])]
        values["remote_image_to_image"] = "true" if wanted else "false"
    if values.get("compile", "auto") != "auto":
        values["compile"] = "true" if _BOOLEANS[str(values["compile"])] else "false"
    if "vae_tile" in values:
        values["vae_tile"] = _vae_tile(str(values["vae_tile"]))
    for attr, name in (("allowed_users", "SD_ALLOWED_USERS"), ("admins", "SD_ADMINS")):
        if attr in values:
            values[attr] = _people(name, str(values[attr]), domains=attr == "allowed_users")
    if "max_queued_per_user" in values:
        values["max_queued_per_user"] = _count(
            "SD_MAX_QUEUED_PER_USER",
            str(values["max_queued_per_user"]),
            low=1,
            high=MAX_QUEUED_PER_USER,
            meaning=f"1 to {MAX_QUEUED_PER_USER} (waiting requests per user)",
        )
    if "daily_limit" in values:
        values["daily_limit"] = _count(
            "SD_DAILY_LIMIT",
            str(values["daily_limit"]),
            low=0,
            high=MAX_DAILY_LIMIT,
            meaning=f"0 (unlimited) to {MAX_DAILY_LIMIT:,} images per user per day",
        )
    _check_remote(values)
    _check_family(values)
    if "history_url" in values:
        values["history_url"] = _history_url(str(values["history_url"]))
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known})


def _check_remote(values: dict[str, object]) -> None:
    """Refuse remote settings that cannot work, naming the fix."""
    url, provider = values.get("remote_url"), values.get("provider")
    if url is not None and not str(url).startswith(("http://", "https://")):
        raise SettingsError(
            f"SD_REMOTE_URL={quote(display_url(str(url)))} is not a URL; use the endpoint's "
            "address, "
            "e.g. https://xyz.endpoints.huggingface.cloud."
        )
    if url is not None and provider is not None:
        raise SettingsError(
            "Set SD_REMOTE_URL (your own endpoint) or SD_PROVIDER (an Inference Provider), "
            "not both."
        )
    if values.get("backend") == "remote" and url is None and values.get("model") == "demo":
        raise SettingsError(
            "SD_MODEL=demo is the offline local model; with SD_BACKEND=remote set "
            f"SD_REMOTE_URL, or SD_MODEL to a Hub model id such as {DEFAULT_MODEL}."
        )


def _check_family(values: dict[str, object]) -> None:
    """The demo family's rules (tiny sizes, light defaults) fit the demo model only."""
    if values.get("model_family") == DEMO.id and values.get("model", DEFAULT_MODEL) != DEMO_MODEL:
        raise SettingsError(
            f"SD_MODEL_FAMILY={DEMO.id} is the demo model's family and applies only with "
            f"SD_MODEL={DEMO_MODEL}; use auto or one of: "
            f"{', '.join(f for f in family_ids() if f != DEMO.id)}."
        )


def _history_url(text: str) -> str:
    """Check SD_HISTORY_URL is a SQLite or PostgreSQL URL (the message never echoes it)."""
    from core.history.errors import parse_url  # SQLAlchemy only when the setting is used

    try:
        url = parse_url(text)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return url.render_as_string(hide_password=False)
