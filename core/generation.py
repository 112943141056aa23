"""The generation contract every backend implements: a validated request in, images out.

`Backend` is everything the pages, the ui helpers and the use cases ask a backend (its state,
loading and unloading, the memory plan in force, the queue, preview support, its facts);
`LocalBackend` (core/local.py) and `RemoteBackend` (core/remote.py) both implement all of it,
so no caller needs to probe for an attribute. Plain Python with no torch import, so pages can
build and validate requests cheaply.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from core.models import DEFAULT_FAMILY, Family, UnknownFamily, get_family
from core.modes import DEFAULT_MODE, Mode, UnknownMode, get_mode
from core.sources import ImageInput

if TYPE_CHECKING:
    from core.grid import GridPlan
    from core.grid_run import GridOutcome
    from core.memory import MemoryPlan
    from core.queue import GenerationQueue

MAX_SEED = 2_147_483_647
MAX_STEPS = 100
MAX_GUIDANCE = 20.0
MAX_IMAGES = 4
# One prompt limit wherever text enters: the form (max_chars), shared links, imported PNGs
# and the request itself. 10,000 characters is far beyond what the text encoders read
# (CLIP 77 tokens, T5 256 by default) and keeps every record's share link valid.
MAX_PROMPT_CHARS = 10_000

# Sizes and defaults are each family's (core.models); these are the default family's
# (SD3.5 Medium), for a request that names no family.
MIN_IMAGE_SIZE = DEFAULT_FAMILY.sizes.min
MAX_IMAGE_SIZE = DEFAULT_FAMILY.sizes.max
SIZE_MULTIPLE = DEFAULT_FAMILY.sizes.multiple
DEFAULT_WIDTH = DEFAULT_FAMILY.width
DEFAULT_HEIGHT = DEFAULT_FAMILY.height
DEFAULT_GUIDANCE = DEFAULT_FAMILY.guidance
DEFAULT_STEPS = DEFAULT_FAMILY.steps


class InvalidRequest(ValueError):  # noqa: N818 - reads as "raise InvalidRequest"
    """A request field is out of range; the message names the valid range or values."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


class GenerationError(RuntimeError):
    """A generation could not run (load failure, out of memory); the message says the fix."""


class LoadCancelled(GenerationError):  # noqa: N818 - reads as "raise LoadCancelled"
    """Someone pressed Cancel during the download or the read-in; the message says what was
    kept and that the next Generate or Load continues from there."""


class GenerationStopped(Exception):  # noqa: N818 - it is a signal, not an error
    """The user asked to stop; raised from the step callback so nothing more is computed."""

    def __init__(self, step: int, total: int):
        super().__init__(f"Stopped at step {step}/{total}.")
        self.step = step
        self.total = total


# LoRAs a request may carry (core.lora applies them; here only what makes a choice valid).
MAX_LORAS = 8  # per request
LORA_WEIGHT_MIN = -4.0
LORA_WEIGHT_MAX = 4.0
MAX_LORA_NAME_CHARS = 100
# Characters a LoRA name cannot hold: A1111's `<lora:name:weight>` and `Lora hashes:
# "name: hash, …"` could not carry them.
_LORA_NAME_FORBIDDEN = frozenset(':<>,"\n\r\t')
MAX_STYLES_APPLIED = 16  # styles applied to one prompt
MAX_STYLE_NAME_CHARS = 100


@dataclass(frozen=True)
class LoraChoice:
    """A LoRA picked for a request: its name (the file's path below SD_LORA_DIR without
    `.safetensors`, or a Hub id `owner/repo/file.safetensors`: core.lora_hub) and its
    weight."""

    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class AppliedStyle:
    """A style as it was applied to a request's prompt (core.styles): the record keeps this
    copy, since the style itself may change or go later."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""


def lora_name_problem(name: object) -> str | None:
    """Why `name` cannot be a LoRA name, or None."""
    if not isinstance(name, str) or not name or len(name) > MAX_LORA_NAME_CHARS:
        return f"its name must be 1–{MAX_LORA_NAME_CHARS} characters"
    bad = sorted(set(name) & _LORA_NAME_FORBIDDEN)
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"its name holds {shown}, which the prompt's <lora:name:weight> cannot; rename it"
    return None


def lora_weight_problem(weight: object) -> str | None:
    """Why `weight` cannot be a LoRA weight, or None."""
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        return "its weight must be a number"
    if not LORA_WEIGHT_MIN <= weight <= LORA_WEIGHT_MAX:
        return f"its weight must be in {LORA_WEIGHT_MIN:g}–{LORA_WEIGHT_MAX:g}; got {weight:g}"
    return None


def nearest_valid_sizes(value: int, family: Family = DEFAULT_FAMILY) -> tuple[int, ...]:
    """Return the valid sizes closest to `value`, one below and one above where they exist."""
    return family.sizes.nearest(value)


def snap_size(value: float, family: Family = DEFAULT_FAMILY) -> int:
    """Round a size to the nearest valid one (for SD3.5 Medium a multiple of 16 in 512–1440)."""
    return family.sizes.snap(value)


def random_seed(rng: random.Random | None = None) -> int:
    """Draw a seed in 0–MAX_SEED."""
    return (rng or random.SystemRandom()).randint(0, MAX_SEED)


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """One click of Generate: `num_images` images with seeds seed, seed+1, …

    `family` (a `core.models` id) decides the valid sizes and fills size, steps and
    guidance left as None with its defaults; `mode` (a `core.modes` id) decides the
    options in `mode_options`, which are validated and completed with their defaults, and
    the images it works on: `source` (Vary, Inpaint, Upscale) and `mask` (Inpaint), whose
    size decides the output's (width and height left as None take it).
    """

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 42
    # None: the family's default (SD3.5 Medium: 1024², guidance 4.5, 40 steps).
    width: int = None  # type: ignore[assignment]
    height: int = None  # type: ignore[assignment]
    guidance_scale: float = None  # type: ignore[assignment]
    num_inference_steps: int = None  # type: ignore[assignment]
    num_images: int = 1
    family: str = DEFAULT_FAMILY.id
    mode: str = DEFAULT_MODE.id
    mode_options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # LoRAs applied for this request only (local backend), in order.
    loras: tuple[LoraChoice, ...] = ()
    # The styles already merged into `prompt` / `negative_prompt`, kept for the record.
    styles: tuple[AppliedStyle, ...] = ()
    source: ImageInput | None = field(default=None, hash=False)
    mask: ImageInput | None = field(default=None, hash=False)
    # The settings of a stored record whose images are not read back yet: the source and
    # mask may be missing (the output size is then the request's own). Nothing runs it.
    inputs_pending: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        family = self._family()
        mode = self._check_mode(family)
        output = self._check_inputs(mode, family)
        for name, default in (
            ("width", family.width),
            ("height", family.height),
            ("guidance_scale", family.guidance),
            ("num_inference_steps", family.steps),
        ):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        self._check_int("seed", self.seed, 0, MAX_SEED)
        rules, where = family.sizes, f" for {family.label}"
        for name in ("width", "height"):
            value = getattr(self, name)
            self._check_int(name, value, rules.min, rules.max, where=where)
            if value % rules.multiple:
                nearest = " or ".join(str(s) for s in rules.nearest(value))
                raise InvalidRequest(
                    name,
                    f"{name.capitalize()} must be divisible by {rules.multiple}; "
                    f"{value} is not. Nearest valid: {nearest}.",
                )
        self._check_int("num_inference_steps", self.num_inference_steps, 1, MAX_STEPS, "Steps")
        self._check_int("num_images", self.num_images, 1, MAX_IMAGES, "Images")
        g = self.guidance_scale
        if isinstance(g, bool) or not isinstance(g, int | float) or not math.isfinite(g):
            raise InvalidRequest(
                "guidance_scale", f"Guidance scale must be a number in 0–{MAX_GUIDANCE:g}."
            )
        if not 0 <= g <= MAX_GUIDANCE:
            raise InvalidRequest(
                "guidance_scale", f"Guidance scale must be in 0–{MAX_GUIDANCE:g}; got {g:g}."
            )
        for name in ("prompt", "negative_prompt"):
            text = getattr(self, name)
            label = name.replace("_", " ").capitalize()
            if not isinstance(text, str):
                raise InvalidRequest(name, f"{label} must be text.")
            if len(text) > MAX_PROMPT_CHARS:
                raise InvalidRequest(
                    name,
                    f"{label} is {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}. "
                    "Shorten it.",
                )
        if output is not None and (self.width, self.height) != output:
            raise InvalidRequest(
                "width",
                f"{mode.label} makes a {output[0]}×{output[1]} image from this source; "
                f"the request says {self.width}×{self.height}.",
            )
        problem = mode.check(self, family)
        if problem is not None:
            raise InvalidRequest(*problem)
        self._check_loras()
        self._check_styles()

    def _check_loras(self) -> None:
        """At most MAX_LORAS, each named once, with a valid name and weight."""
        loras = tuple(self.loras) if isinstance(self.loras, list | tuple) else None
        if loras is None or not all(isinstance(c, LoraChoice) for c in loras):
            raise InvalidRequest("loras", "LoRAs must be a list of (name, weight) choices.")
        if len(loras) > MAX_LORAS:
            raise InvalidRequest(
                "loras", f"{len(loras)} LoRAs chosen; at most {MAX_LORAS} per image."
            )
        names = [c.name for c in loras]
        for choice in loras:
            problem = lora_name_problem(choice.name) or lora_weight_problem(choice.weight)
            if problem:
                shown = choice.name[:60] if isinstance(choice.name, str) else "?"
                raise InvalidRequest("loras", f"LoRA {shown!r}: {problem}.")
            if names.count(choice.name) > 1:
                raise InvalidRequest("loras", f"LoRA {choice.name!r} is chosen twice.")
        object.__setattr__(self, "loras", tuple(LoraChoice(c.name, float(c.weight)) for c in loras))

    def _check_styles(self) -> None:
        styles = tuple(self.styles) if isinstance(self.styles, list | tuple) else None
        if styles is None or not all(isinstance(s, AppliedStyle) for s in styles):
            raise InvalidRequest("styles", "Styles must be a list of applied styles.")
        if len(styles) > MAX_STYLES_APPLIED:
            raise InvalidRequest(
                "styles", f"{len(styles)} styles applied; at most {MAX_STYLES_APPLIED}."
            )
        for style in styles:
            texts = (style.name, style.prompt, style.negative_prompt)
            if not all(isinstance(t, str) for t in texts):
                raise InvalidRequest("styles", "A style's name and prompts must be text.")
            name = style.name
            if not name.strip() or len(name) > MAX_STYLE_NAME_CHARS or "\n" in name:
                raise InvalidRequest(
                    "styles", f"A style name is one line of 1–{MAX_STYLE_NAME_CHARS} characters."
                )
            if max(len(style.prompt), len(style.negative_prompt)) > MAX_PROMPT_CHARS:
                raise InvalidRequest(
                    "styles", f"Style {name[:60]!r} is over {MAX_PROMPT_CHARS:,} characters."
                )
        object.__setattr__(self, "styles", styles)

    def _family(self) -> Family:
        try:
            return get_family(self.family)
        except UnknownFamily as exc:
            raise InvalidRequest("family", str(exc)) from None

    def _check_inputs(self, mode: Mode, family: Family) -> tuple[int, int] | None:
        """The source and mask the mode needs, of matching sizes; return the output size
        they give (None: the mode makes the request's own size). Width and height left as
        None take it."""
        for name in ("source", "mask"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, ImageInput):
                raise InvalidRequest(name, f"The {name} must be an image input.")
            if name in mode.inputs and value is None and not self.inputs_pending:
                what = "an image to work on" if name == "source" else "a painted mask"
                raise InvalidRequest(name, f"{mode.label} needs {what}.")
            if name not in mode.inputs and value is not None:
                raise InvalidRequest(name, f"{mode.label} takes no {name} image.")
        if self.source is None:
            if mode.needs_source and (self.width is None or self.height is None):
                raise InvalidRequest("source", f"{mode.label} needs an image to work on.")
            return None
        if self.mask is not None and self.mask.size != self.source.size:
            raise InvalidRequest(
                "mask",
                f"The mask is {self.mask.width}×{self.mask.height} and the image "
                f"{self.source.width}×{self.source.height}: they must be the same size.",
            )
        try:
            output = mode.output_size(self.source.size, self.mode_options, family)
        except ValueError as exc:  # e.g. already at the family's largest size
            raise InvalidRequest("source", str(exc)) from None
        if output is not None:
            for name, side in zip(("width", "height"), output, strict=True):
                if getattr(self, name) is None:
                    object.__setattr__(self, name, side)
        return output

    def _check_mode(self, family: Family) -> Mode:
        """The mode must be known and run by the family; its options valid (then stored
        complete, defaults filled in)."""
        try:
            mode = get_mode(self.mode)
        except UnknownMode as exc:
            raise InvalidRequest("mode", str(exc)) from None
        if not family.supports(mode.id):
            raise InvalidRequest(
                "mode",
                f"{family.label} does not run {mode.label}; its modes: "
                f"{', '.join(family.pipelines)}.",
            )
        options, problems = mode.check_options(self.mode_options)
        if problems:
            name, message = problems[0]
            raise InvalidRequest(name, message)
        object.__setattr__(self, "mode_options", options)
        return mode

    @staticmethod
    def _check_int(
        name: str, value: Any, low: int, high: int, label: str | None = None, *, where: str = ""
    ) -> None:
        label = label or name.replace("_", " ").capitalize()
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(name, f"{label} must be a whole number in {low}–{high}{where}.")
        if not low <= value <= high:
            raise InvalidRequest(name, f"{label} must be in {low}–{high}{where}; got {value}.")

    @property
    def seeds(self) -> tuple[int, ...]:
        """Seeds of the images in order: seed, seed+1, … wrapping past MAX_SEED to 0."""
        return tuple((self.seed + i) % (MAX_SEED + 1) for i in range(self.num_images))

    @property
    def effective_steps(self) -> int:
        """Denoising steps the pipeline runs (the mode decides: all of them for txt2img)."""
        return get_mode(self.mode).effective_steps(self)

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Arguments for one image of the mode's pipeline call (no generator)."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "guidance_scale": float(self.guidance_scale),
            "num_inference_steps": self.num_inference_steps,
            "width": self.width,
            "height": self.height,
            **get_mode(self.mode).pipeline_kwargs(self),
        }


@dataclass(frozen=True)
class Progress:
    """Where a generation is: `phase` is "queued", "loading", "encoding" (the prompt),
    "compiling" (the first image after a compiled load, before its first step ends),
    "denoising" (step k/n), "decoding" (the VAE; `tiles` when tiled) or "saving".

    A remote backend has no steps: "requesting" (a call in flight, `elapsed` grows) and
    "waiting" (a retry in `retry_in` seconds, e.g. while an endpoint scales up; `detail`
    says why).
    """

    phase: str
    elapsed: float
    image_index: int = 0
    num_images: int = 1
    step: int = 0
    total_steps: int = 0
    queue_position: int = 0
    retry_in: float = 0.0
    detail: str = ""
    tiles: int = 0  # VAE tiles per image while decoding (0: untiled)
    # The first image after a compiled load: its first step compiles, so step times say
    # nothing about the next images (no ETA); phase "compiling" until that step ends.
    compiling: bool = False
    # Live preview of the image at `step`: JPEG bytes at latent size (core.preview), or None.
    preview: bytes | None = field(default=None, repr=False)

    @property
    def fraction(self) -> float:
        """Share of all denoising steps (remote: of the images) of the request done, 0–1."""
        if self.phase in ("requesting", "waiting"):
            return min(self.image_index / max(self.num_images, 1), 1.0)
        if self.phase == "saving":
            return 1.0
        if self.phase not in ("denoising", "decoding") or not self.total_steps:
            return 0.0
        done = self.image_index * self.total_steps + self.step
        return min(done / (self.num_images * self.total_steps), 1.0)

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far, or None before the first step (or while the
        first image compiles: its pace is not the next images')."""
        if self.fraction <= 0 or self.compiling:
            return None
        return self.elapsed * (1 - self.fraction) / self.fraction


ProgressCallback = Callable[[Progress], None]
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class GenerationResult:
    """Images with the seeds that made them, and where the time went."""

    request: GenerationRequest
    images: tuple[Any, ...]  # PIL images, one per seed
    seeds: tuple[int, ...]
    queue_seconds: float
    load_seconds: float
    generation_seconds: float
    per_image_seconds: tuple[float, ...] = ()
    backend: str = "local"
    details: dict[str, str] = field(default_factory=dict)
    # The LoRAs the images were made with, as applied: (name, A1111 sha256, weight).
    loras: tuple[tuple[str, str, float], ...] = ()


class BackendState(StrEnum):
    """Where a backend stands; each backend answers only the states that are true of it.

    A local backend is "not loaded", "loading" or "loaded". A remote backend is always
    "nothing to load": the service holds the model, and this process only sends requests.
    """

    NOT_LOADED = "not loaded"
    LOADING = "loading"
    LOADED = "loaded"
    NOTHING_TO_LOAD = "nothing to load"

    @property
    def ready(self) -> bool:
        """Whether a generation can start without loading anything first."""
        return self in (BackendState.LOADED, BackendState.NOTHING_TO_LOAD)


# Load phases in which Cancel does something: the download and reading the weights in.
CANCELLABLE_PHASES = ("downloading", "reading")


@dataclass(frozen=True)
class LoadProgress:
    """What a running load is doing: share done (0–1), words for it ("" when none yet), and
    seconds since it started (0 when no load runs).

    `phase`: "" when nothing runs, else what the load does now ("starting", "checking",
    "downloading", "reading", "building"), "cancelling" once Cancel was pressed, and
    "cancelled" when no load runs and the last one was cancelled (`text` then says what
    was kept and what the next click does).
    """

    fraction: float = 0.0
    text: str = ""
    elapsed: float = 0.0
    phase: str = ""

    @property
    def cancellable(self) -> bool:
        """Whether Cancel would stop something now (a download or the read-in runs)."""
        return self.phase in CANCELLABLE_PHASES


@dataclass(frozen=True, kw_only=True)
class LoadFacts:
    """How the loaded pipeline was set up, as the Hardware page and records show it."""

    device: str
    dtype: str
    load_seconds: float
    plan: MemoryPlan | None  # the memory plan chosen at load time
    scheduler: str  # the scheduler's class name (a record keeps it)
    held_bytes: int  # parameter and buffer bytes of every component
    compiled: bool  # the transformer runs through torch.compile
    vae_slicing: bool
    vae_tiling: bool
    vae_tile_px: int
    # How the weights are quantized, as records keep it ("none", or e.g.
    # "t5:int8-weight-only(torchao 0.18.0)"; core.quantize.QuantFacts.label).
    quantization: str = "none"
    compile_reason: str = ""  # the SD_COMPILE decision (core.compile.decide_compile)
    compile_cache: str = ""  # the compile cache folder ("" when not compiled)
    compile_cache_reused: bool = False  # an earlier start left compiled code there
    compiling: bool = False  # the first image has not finished: it compiles
    first_image_seconds: float | None = None  # the first compiled image, once made
    prefault_bytes: int = 0  # weights paged in at load (offload plans), bytes
    prefault_seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class BackendFacts:
    """What a backend says about itself, for the sidebar, the Hardware page and records.

    `identity()` is the part a history record and a result's details keep (who made the
    image); `rows` are the backend's own facts for the Hardware page, as (label, value).
    """

    backend: str  # "local" or "remote"
    model: str
    state: BackendState
    device: str = ""  # local, once loaded
    dtype: str = ""  # local, once loaded
    activity: str = ""  # what a running load is doing, e.g. "Downloading: 1.2 GB of 16.3 GB"
    endpoint: str = ""  # remote: the endpoint's URL without credentials
    provider: str = ""  # remote: the Inference Provider (when there is no endpoint)
    reproducible: str = ""  # remote: "not guaranteed" (its hardware is not ours to pin)
    rows: tuple[tuple[str, str], ...] = ()

    def identity(self) -> dict[str, str]:
        """Who makes images now: backend, model, and device/dtype or endpoint/provider."""
        keys = ("backend", "model", "device", "dtype", "endpoint", "provider", "reproducible")
        return {key: str(getattr(self, key)) for key in keys if getattr(self, key)}


@dataclass(frozen=True)
class LoraShelf:
    """The LoRAs a backend offers: the names that can be picked, the files refused (with
    why), and `note` when none can be used here (no folder set, a remote service,
    SD_COMPILE on)."""

    names: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()  # (name, reason)
    truncated: bool = False  # the folder holds more files than are listed
    folder: str = ""  # SD_LORA_DIR as set (a server path: the ui hides it from visitors)
    note: str = ""  # why LoRAs cannot be used here, with the fix ("" when they can)
    hub: bool = False  # Hub ids (owner/repo/file.safetensors) may be named (core.lora_hub)


@dataclass(frozen=True)
class LoraMemory:
    """Memory the LoRAs take, for the Hardware page: read and checked ones kept in CPU RAM
    for the next requests, and the ones on the pipeline now (a request holds them)."""

    held: tuple[tuple[str, int], ...] = ()  # (name, bytes in CPU RAM)
    on_device: tuple[tuple[str, int], ...] = ()  # (name, bytes on the pipeline's device)
    device: str = ""


# A grid's progress: which cell, and where that cell's generation is.
GridProgressCallback = Callable[[Any, Progress], None]


class Backend(Protocol):
    """What pages, ui helpers and use cases ask a backend. Both backends implement all of it.

    The local diffusers pipeline is one (`core.local.LocalBackend`); a remote text-to-image
    service another (`core.remote.RemoteBackend`).
    """

    name: str  # "local" or "remote": recorded with every image
    model: str  # SD_MODEL as configured
    supports_preview: bool  # progress can carry live preview images
    modes: tuple[str, ...]  # the generation modes it can run, e.g. ("txt2img",)

    @property
    def state(self) -> BackendState: ...

    @property
    def last_load_error(self) -> str | None:
        """Why the last load failed (our words), until a load succeeds; None otherwise."""
        ...

    @property
    def loaded_facts(self) -> LoadFacts | None:
        """How the loaded pipeline was set up (its memory plan…); None when nothing is loaded
        here (not loaded yet, or a remote service)."""
        ...

    @property
    def queue(self) -> GenerationQueue | None:
        """The fair queue generations wait in (the Hardware page's admin view), or None where
        there is none (a remote service runs requests side by side)."""
        ...

    def load_progress(self) -> LoadProgress:
        """What the running load is doing (all zeros when none runs)."""
        ...

    def load_async(self) -> Future[Any]:
        """Start loading in the background, or join the load that runs; a finished future
        when there is nothing to load. The future raises what the load raised."""
        ...

    def ensure_loaded(self) -> object:
        """Block until a generation can start; raise what the load raised."""
        ...

    def cancel_load(self) -> bool:
        """Stop the running download or read-in (`load_progress().cancellable`); return
        whether there was one. Nothing else is stopped: a generation never is."""
        ...

    def unload(self) -> bool:
        """Free the loaded model (after running generations); return whether one was loaded."""
        ...

    def generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
        user: str = "",
        preview: bool = False,
    ) -> GenerationResult: ...

    def generate_grid(
        self,
        plan: GridPlan,
        *,
        user: str = "",
        on_progress: GridProgressCallback | None = None,
        should_stop: StopCheck | None = None,
        on_cell: Callable[[Any, GenerationResult], None] | None = None,
    ) -> GridOutcome:
        """Run a grid's cells in order, each an ordinary one-image request taking its own
        turn in the queue (other people's requests run between cells); `on_cell(cell,
        result)` as each lands. A stop or an admin's cancel ends the grid keeping the
        finished cells (`core.grid_run.run_grid`); a refusal that no cell could pass (a
        LoRA that cannot be used) is raised before the first cell runs."""
        ...

    def loras(self) -> LoraShelf:
        """The LoRAs a request may pick here (or why none can be)."""
        ...

    def lora_hashes(self, names: Sequence[str]) -> dict[str, str]:
        """A1111's hash (core.lora.addnet_hash) of each named LoRA file that is here."""
        ...

    def lora_memory(self) -> LoraMemory:
        """What the LoRAs read so far take in memory, and which are on the pipeline now."""
        ...

    def describe(self) -> BackendFacts: ...

    def why_not(self, mode_id: str) -> str:
        """Why this backend does not run `mode_id`, in plain words ("" when it does)."""
        ...
