"""The local backend: the model family's diffusers pipeline (`StableDiffusion3Pipeline` for
SD3.5) on this machine."""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.compile import (
    CacheFacts,
    FirstImage,
    cache_folder,
    compile_blocks,
    compiled_blocks,
    decide_compile,
    save_mega_cache,
    use_cache_folder,
)
from core.demo import DEMO_MODEL, build_demo_pipeline
from core.device import DeviceChoice, DeviceError, choose_device
from core.download import (
    T5_COMPONENTS,
    DownloadCancelled,
    DownloadError,
    LoadStatus,
    fetch,
    hub_file_sizes,
    plan_download,
    read_in,
    weight_files,
)
from core.errors import (
    explain_load_error,
    explain_local_load_error,
    explain_local_path,
    known_family,
)
from core.generation import (
    CANCELLABLE_PHASES,
    BackendFacts,
    BackendState,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    GenerationStopped,
    GridProgressCallback,
    LoadCancelled,
    LoadFacts,
    LoadProgress,
    LoraMemory,
    LoraShelf,
    Progress,
    ProgressCallback,
    StopCheck,
)
from core.grid import GridPlan, distinct_prompts
from core.grid_run import GridOutcome, cell_label, run_grid
from core.local_modes import run_image_request
from core.lora import LoraWeights, adapter_bytes, applied_loras
from core.lora_folder import LoraFolder
from core.lora_hub import HubLoras
from core.memory import (
    MemoryOptions,
    MemoryPlan,
    component_bytes,
    components_from_sizes,
    components_in_folder,
    default_machine,
    plan_for,
)
from core.models import DEFAULT_FAMILY, DEMO, Family, pipeline_class, resolve_family
from core.modes import get_mode
from core.prompt_cache import PromptCache, prompt_key
from core.prompt_cache import encode as encode_prompt
from core.quantize import QuantFacts, quantize_pipeline
from core.queue import SYSTEM_USER, GenerationQueue, fair_slot
from core.quiet import quiet_library_noise
from core.safe_text import quote
from core.seed_loop import ImageProgress, reporter, run_seeds
from core.settings import DEFAULT_VAE_TILE
from core.warmup import WarmFacts, prefault_weights

log = logging.getLogger(__name__)

DOWNLOAD_CANCELLED = (
    "The download was cancelled. Files that finished are kept in the cache; Generate "
    "(or Load model now) continues from there."
)
READ_CANCELLED = (
    "Loading was cancelled while the weights were read into memory. The files stay on "
    "disk; Generate (or Load model now) starts the load again."
)


@dataclass(frozen=True)
class LoadedPipeline:
    """A ready pipeline and the facts of how it was loaded."""

    pipe: Any
    model: str
    choice: DeviceChoice
    load_seconds: float
    plan: MemoryPlan | None = None
    held_bytes: int = 0  # parameter and buffer bytes of every component, wherever they are
    family: Family = DEFAULT_FAMILY
    quant: QuantFacts = field(default_factory=QuantFacts)  # how the weights are quantized
    compile_reason: str = ""  # the SD_COMPILE decision
    compile_cache: CacheFacts | None = None  # where compiled code is kept (None: not compiled)
    # "compiling (first image only)" until the first image after a compiled load is done.
    first_image: FirstImage = field(default_factory=lambda: FirstImage(False), compare=False)
    warm: WarmFacts | None = None  # the offload plan's weights paged in at load
    # Pipelines of other modes built on the same modules (`pipeline_for`), by mode id.
    _by_mode: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def pipeline_for(self, mode: str) -> Any:
        """The pipeline that runs `mode`: the loaded one when the family runs that mode with
        its class, else that class built on the loaded modules with diffusers' `from_pipe`
        (no second copy of the weights; kept for the next call). Raise `GenerationError`
        when the family has no pipeline for `mode`.

        Called under the generation slot (one generation at a time), so the cache needs no
        lock.
        """
        try:
            name = self.family.pipeline_name(mode)
        except ValueError as exc:
            raise GenerationError(str(exc)) from None
        if type(self.pipe).__name__ == name:
            return self.pipe
        if mode not in self._by_mode:
            from core.image_modes import mode_pipeline

            # With the loaded dtype: diffusers' from_pipe without one casts the shared
            # modules to float32 in place (core.image_modes).
            self._by_mode[mode] = mode_pipeline(self.pipe, mode, class_name=name)
        return self._by_mode[mode]

    @property
    def compiled(self) -> bool:
        """Whether the transformer (whole, or its blocks) runs through `torch.compile`."""
        transformer = self.pipe.transformer
        whole = getattr(transformer, "_compiled_call_impl", None) is not None
        return whole or compiled_blocks(transformer) > 0

    @property
    def is_demo(self) -> bool:
        return self.model == DEMO_MODEL

    def facts(self) -> LoadFacts:
        """How this pipeline was set up, for the Hardware page and records."""
        vae = self.vae_state
        return LoadFacts(
            device=self.choice.device,
            dtype=self.choice.dtype,
            load_seconds=self.load_seconds,
            plan=self.plan,
            scheduler=type(self.pipe.scheduler).__name__,
            held_bytes=self.held_bytes,
            compiled=self.compiled,
            vae_slicing=bool(vae["slicing"]),
            vae_tiling=bool(vae["tiling"]),
            vae_tile_px=int(vae["tile_px"]),
            quantization=self.quant.label,
            compile_reason=self.compile_reason,
            compile_cache=str(self.compile_cache.folder) if self.compile_cache else "",
            compile_cache_reused=bool(self.compile_cache and self.compile_cache.reused),
            compiling=self.first_image.pending,
            first_image_seconds=self.first_image.seconds,
            prefault_bytes=self.warm.bytes_touched if self.warm else 0,
            prefault_seconds=self.warm.seconds if self.warm else 0.0,
        )

    @property
    def vae_state(self) -> dict[str, object]:
        """Slicing/tiling as the loaded VAE really has them (not as configured)."""
        vae = self.pipe.vae
        return {
            "slicing": bool(getattr(vae, "use_slicing", False)),
            "tiling": bool(getattr(vae, "use_tiling", False)),
            "tile_px": int(getattr(vae, "tile_sample_min_size", 0) or 0),
            "tile_latent": int(getattr(vae, "tile_latent_min_size", 0) or 0),
            "overlap": float(getattr(vae, "tile_overlap_factor", 0.0) or 0.0),
        }


VAE_TILE_OVERLAP = 0.25  # diffusers' default: a quarter of each tile is blended with its neighbour


def pipeline_bytes(pipe: Any) -> int:
    """Sum the parameter and buffer bytes of every torch module in the pipeline."""
    import torch

    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            tensors = [*component.parameters(), *component.buffers()]
            total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def apply_memory_options(pipe: Any, *, vae_tile: int = DEFAULT_VAE_TILE) -> None:
    """Turn on the VAE savings that act on SD3 (the pipeline itself has no such methods).

    diffusers' tile is `vae.config.sample_size` (1024 for SD3.5), which leaves tiling inert
    at ≤1024 px; set the tile in pixels and in latents (÷8) so that it really tiles.
    `vae_tile=0` turns tiling off.
    """
    pipe.vae.enable_slicing()
    if vae_tile:
        pipe.vae.enable_tiling()
        pipe.vae.tile_sample_min_size = vae_tile
        pipe.vae.tile_latent_min_size = vae_tile // 8
        pipe.vae.tile_overlap_factor = VAE_TILE_OVERLAP
    else:
        pipe.vae.disable_tiling()


def _components(
    model: str, dtype: str, token: str | None, family: Family | None = None
) -> dict[str, int] | None:
    """Component sizes to plan with: the demo's, the folder's or the Hub's files, else the
    family's (None: SD3.5 Medium's)."""
    if model == DEMO_MODEL:
        return component_bytes(dtype, DEMO)
    folder = Path(model).expanduser()
    if folder.is_dir():
        return components_in_folder(folder, dtype)
    problem = explain_local_path(model)
    if problem:  # a missing or broken folder: say so, not a verdict on sizes nobody knows
        raise GenerationError(problem)
    from huggingface_hub import constants
    from huggingface_hub import errors as hub_errors

    # The Hub is asked first, so a refusal (gated, token, unknown id, offline) is what the
    # user reads, not a memory verdict computed from sizes the Hub never confirmed.
    try:
        if constants.HF_HUB_OFFLINE:
            raise hub_errors.OfflineModeIsEnabled("HF_HUB_OFFLINE is set")
        sizes = hub_file_sizes(model, token=token)
    except Exception as exc:  # re-raised below unless a cached copy or an explanation exists
        for skip in ((), T5_COMPONENTS):
            cached = _cached_folder(model, skip=skip, family=family)
            if cached is not None:
                return components_in_folder(cached, dtype)
        message = explain_load_error(exc, model=model, has_token=bool(token), family=family)
        if message is None:
            raise
        raise GenerationError(message) from exc
    if sizes:
        return components_from_sizes(sizes, dtype)
    return component_bytes(dtype, family) if family is not None else None


def _plan(
    model: str,
    choice: DeviceChoice,
    memory: MemoryOptions,
    token: str | None = None,
    family: Family | None = None,
) -> MemoryPlan:
    from core.hardware import free_memory

    free_vram, free_ram = free_memory(choice.device)
    capability = None
    if choice.device == "cuda":
        import torch

        capability = tuple(torch.cuda.get_device_capability(0))
    # A CPU load from files in their own dtype keeps the weights memory-mapped: tables read
    # by index (pos_embed, T5's token embedding) are paged in by row only.
    mapped = model != DEMO_MODEL and choice.device == "cpu" and choice.dtype == "bfloat16"
    machine = default_machine(
        choice.device, choice.dtype, capability=capability, mapped_weights=mapped
    )
    plan = plan_for(
        memory,
        device=choice.device,
        dtype=choice.dtype,
        free_vram_bytes=free_vram,
        free_ram_bytes=free_ram,
        components=_components(model, choice.dtype, token, family),
        machine=machine,
        family=DEMO if model == DEMO_MODEL else family or DEFAULT_FAMILY,
    )
    if plan.verdict == "refused" or (plan.offload != "none" and choice.device != "cuda"):
        raise GenerationError(plan.reason)
    if plan.verdict == "won't fit":
        raise GenerationError(
            f"{model} will not fit: {plan.reason}. To try anyway, set SD_MEMORY=manual "
            "(and SD_OFFLOAD / SD_DROP_T5 yourself)."
        )
    return plan


def load_error_text(exc: BaseException) -> str:
    """A failed load for the Hardware page: our message, or the exception quoted as text."""
    if isinstance(exc, GenerationError | DeviceError):
        return str(exc)  # our words; outside values in it are already quoted
    return f"{type(exc).__name__}: {quote(exc, 200)}"


def _require_torch() -> None:
    """Explain the light install (no torch/diffusers) rather than fail on an import."""
    import importlib.util

    missing = [m for m in ("torch", "diffusers") if importlib.util.find_spec(m) is None]
    if missing:
        raise GenerationError(
            f"{' and '.join(missing)} not installed: this is the light install, which can "
            "only generate remotely. Set SD_BACKEND=remote with SD_REMOTE_URL or SD_PROVIDER "
            "(see docs/remote.md), or install the full app with `make install`."
        )


def load_pipeline(
    *,
    model: str,
    device: str = "auto",
    dtype: str = "auto",
    token: str | None = None,
    memory: MemoryOptions | None = None,
    compile: bool | str = "auto",
    compile_cache: str | Path | None = None,
    status: LoadStatus | None = None,
    read_weights: bool = True,
    family: Family | None = None,
    loras: bool = False,
) -> LoadedPipeline:
    """Load the pipeline with its memory plan, put it on the device, enable the VAE savings.

    Without `memory` the plan is the app's default (`SD_MEMORY=auto`, `SD_QUANT=auto`,
    `SD_VAE_TILE=auto`: chosen from free memory). A hub id is downloaded first with byte
    progress in `status` (see `core.download`), and the weights are read in before
    `from_pretrained`, so "loaded" means the first image does not pay for reading them
    (`read_weights=False` skips that, for the benchmark that compares both); the plan's
    quantization is applied next (`core.quantize`), and an offload plan's weights are
    paged in (`core.warmup.prefault_weights`) for the same reason.
    `compile` is SD_COMPILE (`auto`: on CUDA only): each transformer block is compiled on
    the first image, with torch's compile cache in `compile_cache`/torch-compile (None: the
    Hugging Face cache folder), kept for the next start (`auto` not beside a LoRA folder).
    `family` (SD_MODEL_FAMILY; None: the family `model` is recognised as, if any) gives
    the pipeline class (SD3.5 Medium's for an unknown model) and the gated-model wording.
    Raise `GenerationError` with the remedy for failures we can explain (including a
    plan that cannot work here, such as CPU offload without a GPU).
    """
    start = time.perf_counter()
    status = status or LoadStatus()
    status.start("starting")
    _require_torch()
    quiet_library_noise()
    choice = choose_device(device, dtype)
    family = family or known_family(model)  # never a guess: messages name it
    plan = _plan(model, choice, memory or MemoryOptions(), token, family)
    # Without T5 the pipeline encodes prompts with the two CLIPs only (zeros in T5's place).
    without_t5 = dict.fromkeys(T5_COMPONENTS) if plan.drop_t5 else {}
    pipe = _make_pipe(
        model,
        choice,
        family,
        without_t5=without_t5,
        token=token,
        status=status,
        read=read_weights,
        nf4=tuple(name for name, method in plan.quant if method == "nf4"),
    )
    quant = _quantize(pipe, plan, choice, status)
    warm = _place(pipe, plan, choice, status)
    compiled, compile_reason = decide_compile(compile, choice.device, loras=loras)
    cache = _compile(pipe, compile_cache) if compiled else None
    pipe.set_progress_bar_config(disable=True)
    seconds = time.perf_counter() - start
    log.info(
        "loaded %s on %s/%s in %.1f s (%s; %s)",
        model,
        choice.device,
        choice.dtype,
        seconds,
        plan.summary,
        compile_reason,
    )
    return LoadedPipeline(
        pipe=pipe,
        model=model,
        choice=choice,
        load_seconds=seconds,
        plan=plan,
        held_bytes=pipeline_bytes(pipe),
        family=family or DEFAULT_FAMILY,
        quant=quant,
        compile_reason=compile_reason,
        compile_cache=cache,
        first_image=FirstImage(compiled),
        warm=warm,
    )


def _place(
    pipe: Any, plan: MemoryPlan, choice: DeviceChoice, status: LoadStatus
) -> WarmFacts | None:
    """Put the pipeline where the plan says, set the VAE, and page offloaded weights in."""
    # Offloading installs hooks that move each component to the GPU when it runs; a
    # `.to(device)` afterwards would undo them, so it is one or the other.
    if plan.offload == "model":
        pipe.enable_model_cpu_offload(device=choice.device)
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=choice.device)
    else:
        pipe.to(choice.device)
    apply_memory_options(pipe, vae_tile=plan.vae_tile)
    if plan.offload == "none":
        return None
    # The weights stay in RAM and move per component: page them in now, not in image one.
    status.start("paging")
    return prefault_weights(pipe)


def _quantize(pipe: Any, plan: MemoryPlan, choice: DeviceChoice, status: LoadStatus) -> QuantFacts:
    """Apply the plan's torchao quantization in place (NF4 came with `from_pretrained`).

    On CUDA each Linear is quantized on the GPU (fast); an offload plan hands each
    component back to RAM afterwards, so the GPU never holds more than one.
    """
    quant = {name: method for name, method in plan.quant if method != "nf4"}
    nf4 = {name: "nf4" for name, method in plan.quant if method == "nf4"}
    facts = QuantFacts()
    if quant:
        status.start("quantizing")
        cuda = choice.device == "cuda"
        facts = quantize_pipeline(
            pipe, quant, device="cuda" if cuda else None, back_to_cpu=plan.offload != "none"
        )
    if nf4:
        from importlib import metadata

        version = metadata.version("bitsandbytes")
        words = {**facts.components, **dict.fromkeys(nf4, "nf4")}
        library = ", ".join(x for x in (facts.library, f"bitsandbytes {version}") if x)
        facts = QuantFacts(components=words, library=library, seconds=facts.seconds)
    return facts


def _compile(pipe: Any, base: str | Path | None) -> CacheFacts:
    """Compile each transformer block (on the first image), caching in a kept folder."""
    if base is None:
        from huggingface_hub import constants

        base = constants.HF_HOME
    cache = use_cache_folder(cache_folder(base))
    # In place, block by block, so offload hooks and `pipe.transformer` stay as they are.
    compile_blocks(pipe.transformer)
    return cache


def _make_pipe(
    model: str,
    choice: DeviceChoice,
    family: Family | None,
    *,
    without_t5: dict,
    token: str | None,
    status: LoadStatus,
    read: bool,
    nf4: tuple[str, ...] = (),
) -> Any:
    """The demo built in memory, or the model's weights through the family's pipeline
    (`nf4`: those components quantized by bitsandbytes while loading)."""
    if model != DEMO_MODEL:
        return _from_pretrained(
            model,
            choice,
            token=token,
            without_t5=without_t5,
            status=status,
            read=read,
            family=family,
            nf4=nf4,
        )
    if nf4:
        raise GenerationError(
            "SD_QUANT=nf4 quantizes while loading from files; the demo model is built in "
            "memory. Use SD_QUANT=int8 with the demo."
        )
    status.start("building")
    pipe = build_demo_pipeline(dtype=choice.torch_dtype)
    return type(pipe)(**{**pipe.components, **without_t5}) if without_t5 else pipe


def _from_pretrained(
    model: str,
    choice: DeviceChoice,
    *,
    token: str | None,
    without_t5: dict,
    status: LoadStatus,
    read: bool = True,
    family: Family | None = None,
    nf4: tuple[str, ...] = (),
) -> Any:
    """Download (hub id) with progress, read the weights in, then `from_pretrained` the folder
    with the family's text-to-image pipeline class (None: an unknown model, Medium's)."""
    pipeline = pipeline_class(family or DEFAULT_FAMILY)
    problem = explain_local_path(model)
    if problem:
        raise GenerationError(problem)
    source = model
    if not Path(model).expanduser().exists():
        source = _download(model, token=token, skip=tuple(without_t5), status=status, family=family)
    if read and Path(source).is_dir():
        skip = tuple(without_t5)
        files = [f for f in weight_files(source) if f.relative_to(source).parts[0] not in skip]
        try:
            read_in(files, status=status)
        except DownloadCancelled:
            raise LoadCancelled(READ_CANCELLED) from None
    status.start("building")
    try:
        extra = {}
        if nf4:  # bitsandbytes quantizes while loading; there is no in-place path for it
            from core.quantize import pretrained_nf4_config

            extra["quantization_config"] = pretrained_nf4_config(nf4)
        return pipeline.from_pretrained(
            source,
            dtype=choice.torch_dtype,
            use_safetensors=True,
            token=token,
            **without_t5,
            **extra,
        )
    except Exception as exc:  # re-raised below unless it is a failure we can explain
        message = explain_load_error(
            exc, model=model, has_token=bool(token), family=family
        ) or explain_local_load_error(exc, model=model)
        if message is None:
            raise
        raise GenerationError(message) from exc


def _download(
    model: str,
    *,
    token: str | None,
    skip: tuple[str, ...],
    status: LoadStatus,
    family: Family | None = None,
) -> str:
    """Fetch a hub id into the cache with byte progress; return the folder to load from.

    Offline (HF_HUB_OFFLINE=1), or when the Hub cannot be asked, hand the id to diffusers,
    which loads a complete cached copy or raises the error `core.errors` explains.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        # diffusers explains a missing copy
        return _cached_folder(model, skip=skip, family=family) or model
    status.start("checking")
    try:
        plan = plan_download(model, token=token, skip=skip, family=family or DEFAULT_FAMILY)
        return fetch(plan, token=token, status=status)
    except DownloadCancelled:
        raise LoadCancelled(DOWNLOAD_CANCELLED) from None
    except DownloadError as exc:
        raise GenerationError(str(exc)) from exc
    except Exception as exc:  # a hub refusal or no network: explained, unless cached
        message = explain_load_error(exc, model=model, has_token=bool(token), family=family)
        if message is None:
            raise
        cached = _cached_folder(model, skip=skip, family=family)
        if cached is not None:
            log.warning("the Hub did not answer (%s); loading the cached copy", type(exc).__name__)
            return cached
        raise GenerationError(message) from exc


def _cached_folder(
    model: str, *, skip: tuple[str, ...], family: Family | None = None
) -> str | None:
    """The complete cached snapshot of `model` for the family's pipeline, or None."""
    try:
        return str(
            pipeline_class(family or DEFAULT_FAMILY).download(
                model, local_files_only=True, use_safetensors=True, **dict.fromkeys(skip)
            )
        )
    except Exception:  # not cached, or cached partly: the caller explains the original error
        return None


def free_accelerator_memory() -> None:
    """Collect garbage and hand cached accelerator memory back."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()


def check_slg_layers(pipe: Any, request: GenerationRequest) -> None:
    """Refuse SLG layers the loaded transformer does not have (diffusers would silently skip
    nothing): a model of an unknown family may have fewer layers than its rules say."""
    from core.slg import from_option

    guide = from_option(request.mode_options.get("slg"))
    if guide is not None:
        guide.check_layers(int(pipe.transformer.config.num_layers))


def vae_tiles(pipe: Any, width: int, height: int) -> int:
    """Tiles the VAE decodes one image in (0: untiled), as diffusers' `tiled_decode` splits it."""
    vae = pipe.vae
    latent_tile = int(getattr(vae, "tile_latent_min_size", 0) or 0)
    if not getattr(vae, "use_tiling", False) or not latent_tile:
        return 0
    rows, cols = height // 8, width // 8
    if rows <= latent_tile and cols <= latent_tile:
        return 0
    stride = int(latent_tile * (1 - float(getattr(vae, "tile_overlap_factor", 0.25))))
    return math.ceil(rows / stride) * math.ceil(cols / stride)


def run_pipeline(
    pipe: Any,
    request: GenerationRequest,
    *,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    started: float | None = None,
    preview: bool = False,
    cache: PromptCache | None = None,
    model: str = "",
    device: str = "",
    dtype: str = "",
    lora_tag: str = "",
    first_image: FirstImage | None = None,
) -> tuple[list[Any], list[float]]:
    """Make one image per seed with a CPU generator each, under `torch.inference_mode()`
    (the loop around each image, shared with the image modes: `core.seed_loop.run_seeds`).

    One image per pipeline call, also for several seeds: a batch of 4 in one call was only
    7 % faster on an H200 (12.65 vs 13.52 s) and would make each image depend on its batch.
    The prompt is encoded once (or taken from `cache`) and every seed reuses it. Progress
    goes through the phases encoding → denoising (step k/n) → decoding, and with `model`
    and `device` set the step and decode times are recorded for estimates.
    With `preview`, progress updates carry a live preview JPEG when one is due
    (`core.preview`); it only reads the latents, so the images are the same either way.
    `lora_tag` names the LoRAs on the text encoders (`AppliedLoras.cache_tag`), so that
    `cache` never hands over embeddings made with other ones.
    `first_image` (a compiled load's, while pending): the first step compiles, so the
    phase reads "compiling" until it ends, that image gives no ETA and no speed record.
    """
    import torch

    started = time.perf_counter() if started is None else started
    total = request.effective_steps  # what the mode's pipeline runs (txt2img: all steps)
    report = reporter(on_progress, started, request)
    if should_stop is not None and should_stop():
        raise GenerationStopped(0, total)
    with torch.inference_mode():
        key = prompt_key(pipe, request, model=model, dtype=dtype, loras=lora_tag)
        embeds = cache.get(key) if cache is not None else None
        encode_seconds = None
        if embeds is None:
            report("encoding")
            encode_start = time.perf_counter()
            embeds = encode_prompt(pipe, request)
            encode_seconds = time.perf_counter() - encode_start
            if cache is not None:
                cache.put(key, embeds)
    kwargs = request.pipeline_kwargs()
    del kwargs["prompt"], kwargs["negative_prompt"]

    def make_one(seed: int, one: ImageProgress) -> tuple[Any, int]:
        def on_step(_pipe: Any, step: int, _t: Any, step_kwargs: dict) -> dict:
            one.on_step(step + 1, total)
            if one.previewer is not None:
                one.on_latents(_pipe.scheduler, step + 1, step_kwargs["latents"])
            return {}

        generator = torch.Generator(device="cpu").manual_seed(seed)
        output = pipe(**kwargs, **embeds, generator=generator, callback_on_step_end=on_step)
        return output.images[0], total

    return run_seeds(
        request,
        make_one,
        report=report,
        should_stop=should_stop,
        preview=preview and on_progress is not None,
        first_image=first_image,
        tiles=vae_tiles(pipe, request.width, request.height),
        model=model,
        device=device,
        encode_seconds=encode_seconds,
    )


def _keep_compiled(loaded: LoadedPipeline) -> None:
    """After an image that compiled (the first, or a new size's): write torch's portable
    compile artifacts beside the inductor cache, so the next start (even on a machine that
    kept only that file) skips code generation. Never fails a generation: the image is made
    already."""
    if loaded.compile_cache is None:
        return
    try:
        size = save_mega_cache(loaded.compile_cache.folder)
    except Exception as exc:  # a full disk or a torch without the API: compile again next time
        log.warning("compile artifacts not saved: %s", quote(exc, 200))
        return
    log.info("first image %.1f s (compiled); %d bytes of compile artifacts kept in %s",
             loaded.first_image.seconds or 0.0, size, loaded.compile_cache.folder)  # fmt: skip


class LocalBackend:
    """The shared pipeline of this process: loaded once, used by one generation at a time.

    Implements `core.generation.Backend`.
    """

    name = "local"
    supports_preview = True  # progress carries live previews (a remote service has no steps)

    def __init__(
        self,
        *,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        token_provider: Callable[[], str | None] = lambda: None,
        loader: Callable[..., LoadedPipeline] = load_pipeline,
        memory: MemoryOptions | None = None,
        compile: bool | str = "auto",
        max_queued_per_user: int | Callable[[], int] = 2,
        family: Family | None = None,
        lora_dir: str | Path | None = None,
        compile_cache: str | Path | None = None,
    ) -> None:
        # SD_MODEL_FAMILY when set; None: the loader works it out from `model`.
        self.family = family
        self.memory = memory
        self.compile = compile  # SD_COMPILE: "auto" (CUDA only), "true", "false"
        self.compile_cache = compile_cache  # SD_DATA_DIR: the compile cache lives under it
        self.model = model
        self.device = device
        self.dtype = dtype
        self._token_provider = token_provider
        self._loader = loader
        self.queue = GenerationQueue(max_queued_per_user)
        self._lock = threading.Lock()  # guards the fields below
        self._loaded: LoadedPipeline | None = None
        self._loading: Future[LoadedPipeline] | None = None
        self._loading_since: float | None = None
        self.last_load_error: str | None = None
        self._cancelled = ""  # the last load was cancelled: what was kept, what comes next
        self.load_count = 0  # successful loads: one per process unless unloaded
        # What the load is doing (download bytes, reading weights), read by every session.
        self.load_status = LoadStatus()
        self.prompt_cache = PromptCache()
        # SD_LORA_DIR: files read once, applied per request under the generation slot.
        # Hub ids: one file downloaded into the HF cache with the app's token (core.lora_hub).
        self.lora_folder = LoraFolder(lora_dir, hub=HubLoras(token_provider=token_provider))

    # --- loading -------------------------------------------------------------------------
    @property
    def loaded(self) -> LoadedPipeline | None:
        return self._loaded

    @property
    def state(self) -> BackendState:
        """Loaded, loading or not loaded."""
        with self._lock:
            if self._loaded is not None:
                return BackendState.LOADED
            return BackendState.LOADING if self._loading is not None else BackendState.NOT_LOADED

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes the model family has a pipeline for (the loaded one's, once loaded)."""
        loaded = self._loaded
        if loaded is not None:
            family = loaded.family
        else:
            family = self.family or resolve_family(self.model).family
        return tuple(family.pipelines)

    @property
    def loaded_facts(self) -> LoadFacts | None:
        loaded = self._loaded
        return None if loaded is None else loaded.facts()

    def load_progress(self) -> LoadProgress:
        """The running load's share done, its words (download bytes, reading weights), its
        phase and seconds since it started; "cancelling" once Cancel was pressed; all zeros
        when none runs, but for "cancelled" with its words after a cancelled load."""
        since, status = self._loading_since, self.load_status
        if since is None:
            cancelled = self._cancelled
            return LoadProgress(text=cancelled, phase="cancelled") if cancelled else LoadProgress()
        elapsed = time.perf_counter() - since
        if status.cancelled:
            return LoadProgress(status.fraction, "Cancelling…", elapsed, "cancelling")
        return LoadProgress(status.fraction, status.text(), elapsed, status.phase)

    def load_async(self) -> Future[LoadedPipeline]:
        """Start loading in a background thread, or join the load already running.

        Every session gets the same future, so the model loads once per process. A failed
        load is forgotten: the next call tries again. A cancelled load is never joined:
        the next call starts afresh (once the cancelled one has wound down).
        """
        with self._lock:
            if self._loaded is not None:
                done: Future[LoadedPipeline] = Future()
                done.set_result(self._loaded)
                return done
            previous = self._loading
            if previous is not None and not self.load_status.cancelled:
                return previous
            future: Future[LoadedPipeline] = Future()
            self._loading, self._loading_since = future, time.perf_counter()
            # A status of its own per load: a cancelled download still winding down keeps
            # seeing its cancel, whatever the new load does.
            self.load_status, self._cancelled = LoadStatus(), ""
            status = self.load_status
        threading.Thread(
            target=self._load, args=(future, status, previous), name="sd-load", daemon=True
        ).start()
        return future

    def _load(
        self,
        future: Future[LoadedPipeline],
        status: LoadStatus,
        previous: Future[LoadedPipeline] | None,
    ) -> None:
        if previous is not None:  # a cancelled load: let it end (and let go of its files)
            try:
                loaded = previous.result()
            except BaseException:  # cancelled, as asked: this load starts afresh
                loaded = None
            if loaded is not None:  # the cancel came too late: that load finished
                self._end(future, loaded=loaded)
                return
        try:
            loaded = self._loader(
                model=self.model,
                device=self.device,
                dtype=self.dtype,
                token=self._token_provider(),
                status=status,
                **self._load_options(),
            )
        except BaseException as exc:  # handed to every waiting session through the future
            self._end(future, error=exc)
            return
        self._end(future, loaded=loaded, counted=True)

    def _load_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {} if self.memory is None else {"memory": self.memory}
        if self.compile != "auto":
            options["compile"] = self.compile
        if self.compile_cache is not None:
            options["compile_cache"] = self.compile_cache
        if self.lora_folder.folder is not None:
            options["loras"] = True  # SD_COMPILE=auto then leaves the blocks uncompiled
        if self.family is not None:
            options["family"] = self.family
        return options

    def _end(
        self,
        future: Future[LoadedPipeline],
        *,
        loaded: LoadedPipeline | None = None,
        error: BaseException | None = None,
        counted: bool = False,
    ) -> None:
        """Record how the load behind `future` ended, then wake everyone waiting on it.
        Only the current load clears the loading state (a cancelled one may end after a
        newer one started)."""
        with self._lock:
            current = self._loading is future
            if current:
                self._loading = self._loading_since = None
            if loaded is not None:
                self._loaded = loaded
                self.last_load_error = None
                if counted:
                    self.load_count += 1
            elif isinstance(error, LoadCancelled):
                if current:  # not a failure: nothing to fix
                    self._cancelled, self.last_load_error = str(error), None
            elif current:
                self.last_load_error = load_error_text(error)
        if loaded is not None:
            future.set_result(loaded)
        else:
            future.set_exception(error)

    def cancel_load(self) -> bool:
        """Stop the running download or read-in; return whether there was one.

        Other phases (imports, asking the Hub, building the pipeline) finish by
        themselves in moments; a generation is never touched.
        """
        status = self.load_status
        with self._lock:
            running = self._loading is not None
        if running and status.phase in CANCELLABLE_PHASES and not status.cancelled:
            status.cancel()
            return True
        return False

    def ensure_loaded(self) -> LoadedPipeline:
        """Block until the pipeline is loaded; raise what the load raised."""
        return self.load_async().result()

    def unload(self) -> bool:
        """Drop the pipeline and free its memory; the next generation loads it again.

        Waits for the generation lock (and for a load in progress), so a running
        generation finishes first. Return whether a pipeline was loaded.
        """
        with self.queue.slot():
            with self._lock:
                loading = self._loading
            if loading is not None:
                try:
                    loading.result()
                except Exception:  # a failed load left nothing to drop
                    log.info("unload: the load in progress failed")
                loading = None  # its result is the pipeline too: let it go
            with self._lock:
                loaded, self._loaded = self._loaded, None
            self.prompt_cache.clear()
            if loaded is None:
                return False
            pipe = loaded.pipe
            if loaded.plan is not None and loaded.plan.offload != "none":
                pipe.remove_all_hooks()  # accelerate's hooks hold references to the modules
            del loaded, pipe
            free_accelerator_memory()
        log.info("unloaded %s", self.model)
        return True

    # --- generating ----------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
        user: str = SYSTEM_USER,
        preview: bool = False,
    ) -> GenerationResult:
        """Generate the request's images in order; wait for the shared pipeline first.

        `user` is whose turn this is in the fair queue (see `core.queue`). `preview` adds
        live preview JPEGs to the progress updates (see `run_pipeline`). The request's
        LoRAs are read before the turn and put on the pipeline for this request only.
        """
        return self._generate(
            request,
            on_progress=on_progress,
            should_stop=should_stop,
            user=user,
            preview=preview,
            cache=self.prompt_cache,
        )

    def _generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressCallback | None,
        should_stop: StopCheck | None,
        user: str,
        preview: bool,
        cache: PromptCache,
        label: str | None = None,
    ) -> GenerationResult:
        """`generate` with the prompt cache to use and the queue entry's label."""
        import torch

        start = time.perf_counter()
        was_loaded = self._loaded is not None
        loaded = self.ensure_loaded()
        load_seconds = 0.0 if was_loaded else time.perf_counter() - start
        loras = self._lora_weights(request, loaded)  # read and checked before the turn

        def on_wait(ahead: int) -> None:
            if on_progress is not None:
                on_progress(Progress("queued", time.perf_counter() - start, queue_position=ahead))

        with fair_slot(self.queue, request, user, on_wait, should_stop, label=label) as stop:
            if self._loaded is not loaded:  # unloaded while this generation waited
                loaded = self.ensure_loaded()
                loras = self._lora_weights(request, loaded)
            queued_until = time.perf_counter()
            compiled_before = loaded.first_image.compiled_images
            try:
                images, per_image, applied = self._run(
                    loaded,
                    request,
                    loras,
                    cache=cache,
                    on_progress=on_progress,
                    should_stop=stop,
                    started=queued_until,
                    preview=preview,
                )
            except torch.OutOfMemoryError:
                free_accelerator_memory()
                raise GenerationError(
                    f"Out of memory at {request.width}×{request.height} with "
                    f"{request.num_images} image(s). Try a smaller size or fewer images, or a "
                    "memory plan that offloads to the CPU (see the Hardware page)."
                ) from None
        done = time.perf_counter()
        if loaded.first_image.compiled_images > compiled_before:  # new graphs: keep them
            _keep_compiled(loaded)
        return GenerationResult(
            request=request,
            images=tuple(images),
            seeds=request.seeds,
            queue_seconds=max(queued_until - start - load_seconds, 0.0),
            load_seconds=load_seconds,
            generation_seconds=done - queued_until,
            per_image_seconds=tuple(per_image),
            backend=self.name,
            details=self.describe().identity(),
            loras=applied,
        )

    def _run(
        self,
        loaded: LoadedPipeline,
        request: GenerationRequest,
        loras: list[tuple[LoraWeights, float]],
        *,
        cache: PromptCache,
        **run: Any,
    ) -> tuple[list[Any], list[float], tuple[tuple[str, str, float], ...]]:
        """Run the request on the pipeline with its LoRAs on for the call only (hold the slot)."""
        with applied_loras(loaded.pipe, loras) as applied:
            if applied.loras:  # what the Hardware page shows while this request runs
                sizes = adapter_bytes(loaded.pipe)
                self.lora_folder.on_pipeline(
                    tuple(
                        (name, sizes.get(f"sd_lora_{i}", 0))
                        for i, (name, _, _) in enumerate(applied.loras)
                    )
                )
            try:
                images, per_image = self._run_mode(
                    loaded, request, cache=cache, lora_tag=applied.cache_tag, **run
                )
            finally:
                self.lora_folder.on_pipeline(())
        return images, per_image, applied.loras

    def _lora_weights(
        self, request: GenerationRequest, loaded: LoadedPipeline
    ) -> list[tuple[LoraWeights, float]]:
        return self.lora_folder.weights(request.loras, loaded.pipe, compiled=loaded.compiled)

    def generate_grid(
        self,
        plan: GridPlan,
        *,
        user: str = SYSTEM_USER,
        on_progress: GridProgressCallback | None = None,
        should_stop: StopCheck | None = None,
        on_cell: Callable[[Any, GenerationResult], None] | None = None,
    ) -> GridOutcome:
        """Run `plan`'s cells in order, one queue turn each (see `Backend.generate_grid`).

        Every cell's LoRAs are read and checked before the first cell runs. The grid has
        its own prompt cache, sized to its distinct prompts, so other people's prompts
        between its cells cannot push the grid's out: each is encoded once per grid.
        """
        loaded = self.ensure_loaded()
        for loras in dict.fromkeys(cell.request.loras for cell in plan.cells):
            self.lora_folder.weights(loras, loaded.pipe, compiled=loaded.compiled)
        cache = PromptCache(max_entries=max(distinct_prompts(plan), 1))

        def run_cell(cell: Any) -> GenerationResult:
            def progress(p: Progress) -> None:
                if on_progress is not None:
                    on_progress(cell, p)

            return self._generate(
                cell.request,
                on_progress=progress,
                should_stop=should_stop,
                user=user,
                preview=False,
                cache=cache,
                label=cell_label(plan, cell),
            )

        return run_grid(plan, run_cell, should_stop=should_stop, on_cell=on_cell)

    # --- LoRAs ---------------------------------------------------------------------------
    def loras(self) -> LoraShelf:
        """The LoRA folder's files (none while the transformer is compiled: see `LoraFolder`).
        Before a load: compiled only with SD_COMPILE=true (auto never compiles beside a LoRA
        folder)."""
        loaded = self._loaded
        if loaded is not None:
            return self.lora_folder.shelf(compiled=loaded.compiled)
        return self.lora_folder.shelf(compiled=decide_compile(self.compile, "", loras=True)[0])

    def lora_hashes(self, names: Sequence[str]) -> dict[str, str]:
        return self.lora_folder.hashes(names)

    def lora_memory(self) -> LoraMemory:
        loaded = self._loaded
        return self.lora_folder.memory(loaded.choice.device if loaded is not None else "")

    def why_not(self, mode_id: str) -> str:
        """Why `mode_id` does not run here ("" when the family has a pipeline for it)."""
        if mode_id in self.modes:
            return ""
        family = self._loaded.family if self._loaded is not None else self.family
        family = family or resolve_family(self.model).family
        return f"{family.label} has no pipeline for {get_mode(mode_id).label} here."

    def _run_mode(
        self,
        loaded: LoadedPipeline,
        request: GenerationRequest,
        *,
        cache: PromptCache,
        lora_tag: str,
        **run: Any,
    ) -> tuple[list[Any], list[float]]:
        """Run `request` on the loaded pipeline: text to image as diffusers' own call, the
        modes that work on an image through `core.local_modes` (their pipeline built on
        the same modules). Inputs that cannot run here raise `GenerationError`. `lora_tag`
        names the LoRAs on the text encoders (part of the prompt cache's key)."""
        from core.image_modes import ModeError
        from core.slg import SLGError
        from core.sources import InputError

        mode = get_mode(request.mode)
        facts = {
            "cache": cache,
            "model": loaded.model,
            "device": loaded.choice.device,
            "dtype": loaded.choice.dtype,
            "first_image": loaded.first_image,  # a compiled load's first image: "compiling"
            "lora_tag": lora_tag,
        }
        try:
            check_slg_layers(loaded.pipe, request)
            if not mode.needs_source:
                return run_pipeline(loaded.pipeline_for(request.mode), request, **run, **facts)
            loaded.family.pipeline_name(request.mode)  # ValueError naming its modes
            if request.source is None or ("mask" in mode.inputs and request.mask is None):
                raise GenerationError(f"{mode.label} needs its image (and mask) to run.")
            tiles = vae_tiles(loaded.pipe, request.width, request.height)
            return run_image_request(
                loaded.pipe, request, family=loaded.family, tiles=tiles, **run, **facts
            )
        except (ModeError, SLGError, InputError) as exc:  # our words, with the fix
            raise GenerationError(str(exc)) from None
        except ValueError as exc:
            if "has no pipeline for the mode" not in str(exc):
                raise
            raise GenerationError(str(exc)) from None

    def describe(self) -> BackendFacts:
        """Facts for the sidebar and history: model, state, and device and dtype once loaded."""
        state = self.state
        activity = self.load_progress().text if state is BackendState.LOADING else ""
        loaded = self._loaded
        return BackendFacts(
            backend=self.name,
            model=self.model,
            state=state,
            device=loaded.choice.device if loaded is not None else "",
            dtype=loaded.choice.dtype if loaded is not None else "",
            activity=activity,
        )
