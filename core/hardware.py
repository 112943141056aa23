"""Facts about this machine, gathered on demand for the Hardware page.

`gather_facts` imports torch (the Hardware page pays for it when it renders; other pages
must not import this module's functions at render time). Nothing here touches the
network: the Hugging Face cache is read from disk only.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from core.demo import DEMO_MODEL
from core.device import DeviceChoice, DeviceError, choose_device, cpu_has_native_bf16
from core.errors import explain_local_path
from core.memory import MemoryOptions, MemoryPlan, component_bytes, default_machine, plan_for
from core.models import DEMO, family_for, full_size
from core.quant_plan import Machine
from core.safe_text import quote
from core.settings import Settings

log = logging.getLogger(__name__)

PACKAGES = ("torch", "diffusers", "transformers", "streamlit", "huggingface_hub", "accelerate")


@dataclass(frozen=True)
class GpuFacts:
    """One CUDA GPU: what it is, its memory, and what this process holds on it."""

    index: int
    name: str
    capability: str
    total_bytes: int
    free_bytes: int
    held_bytes: int


@dataclass(frozen=True)
class CpuFacts:
    model: str
    physical_cores: int | None
    logical_cores: int | None
    native_bf16: bool


@dataclass(frozen=True)
class HubFacts:
    """The Hugging Face side: whether a token is set (never its value) and the cache."""

    token_configured: bool
    cache_dir: str
    model_kind: str  # "hub", "local folder" or "demo"
    cached: bool | None  # None: not a Hub model
    cached_bytes: int | None
    cached_files: int | None
    note: str
    revision: str | None = None  # the cached snapshot's commit, when the model is cached
    problem: str | None = None  # why SD_MODEL cannot be loaded, when that is known already


@dataclass(frozen=True)
class HardwareFacts:
    """Everything the Hardware page shows about the machine (not the pipeline)."""

    choice: DeviceChoice | None
    choice_error: str | None
    os: str
    python: str
    versions: dict[str, str]
    cuda_available: bool
    cuda_version: str | None
    gpus: tuple[GpuFacts, ...]
    mps_available: bool
    cpu: CpuFacts
    ram_total_bytes: int
    ram_available_bytes: int

    @property
    def free_vram_bytes(self) -> int | None:
        """Free memory of the GPU the pipeline uses (the first one), if on CUDA."""
        if self.choice is None or self.choice.device != "cuda" or not self.gpus:
            return None
        return self.gpus[0].free_bytes


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """Return the CPU's marketing name from /proc/cpuinfo, or what `platform` knows."""
    try:
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        ):
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_facts() -> tuple[GpuFacts, ...]:
    """Return each visible CUDA GPU's name, capability and memory, or () without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return ()
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        major, minor = torch.cuda.get_device_capability(index)
        gpus.append(
            GpuFacts(
                index=index,
                name=torch.cuda.get_device_name(index),
                capability=f"{major}.{minor}",
                total_bytes=int(total),
                free_bytes=int(free),
                held_bytes=int(torch.cuda.memory_allocated(index)),
            )
        )
    return tuple(gpus)


def gather_facts(settings: Settings) -> HardwareFacts:
    """Collect the device choice, versions, GPUs, CPU and RAM as they are right now."""
    import psutil
    import torch

    try:
        choice, choice_error = choose_device(settings.device, settings.dtype), None
    except DeviceError as exc:
        choice, choice_error = None, str(exc)
    memory = psutil.virtual_memory()
    return HardwareFacts(
        choice=choice,
        choice_error=choice_error,
        os=platform.platform(),
        python=sys.version.split()[0],
        versions={name: _version(name) for name in PACKAGES},
        cuda_available=bool(torch.cuda.is_available()),
        cuda_version=torch.version.cuda,
        gpus=gpu_facts(),
        mps_available=bool(torch.backends.mps.is_available()),
        cpu=CpuFacts(
            model=cpu_model(),
            physical_cores=psutil.cpu_count(logical=False),
            logical_cores=os.cpu_count(),
            native_bf16=cpu_has_native_bf16(),
        ),
        ram_total_bytes=int(memory.total),
        ram_available_bytes=int(memory.available),
    )


def memory_plan(
    settings: Settings, facts: HardwareFacts, *, sd35: bool = False
) -> MemoryPlan | None:
    """Return the plan the loader would pick now, or None without a usable device.

    The plan uses the model family's component sizes (SD_MODEL_FAMILY, else worked out
    from SD_MODEL). The demo model is judged by its own tiny size unless `sd35` asks what
    the full-size model of its family (SD3.5 Medium for the demo family) would need here.
    """
    if facts.choice is None:
        return None
    demo = settings.model == DEMO_MODEL and not sd35
    family = DEMO if demo else full_size(family_for(settings).family)
    device, dtype = facts.choice.device, facts.choice.dtype
    return plan_for(
        MemoryOptions.from_settings(settings),
        device=device,
        dtype=dtype,
        free_vram_bytes=facts.free_vram_bytes,
        free_ram_bytes=facts.ram_available_bytes,
        components=component_bytes(dtype, family),
        machine=planner_machine(facts, mapped_weights=not demo),
        family=family,
    )


def planner_machine(facts: HardwareFacts, *, mapped_weights: bool) -> Machine:
    """What the planner needs to know of this machine: device, dtype, the GPU's compute
    capability, torchao / bitsandbytes, and whether CPU weights stay memory-mapped (a
    bfloat16 load from files; `mapped_weights=False` for a model built in memory)."""
    choice = facts.choice
    assert choice is not None
    capability = None
    if choice.device == "cuda" and facts.gpus:
        major, _, minor = facts.gpus[0].capability.partition(".")
        capability = (int(major), int(minor or 0))
    return default_machine(
        choice.device,
        choice.dtype,
        capability=capability,
        mapped_weights=mapped_weights and choice.device == "cpu" and choice.dtype == "bfloat16",
    )


def full_size_label(settings: Settings) -> str:
    """The real model `memory_plan(..., sd35=True)` plans for, e.g. "SD3.5 Large Turbo"."""
    return full_size(family_for(settings).family).label


def free_memory(device: str) -> tuple[int | None, int]:
    """Return (free VRAM of the CUDA device or None, available RAM) in bytes."""
    import psutil

    vram = None
    if device == "cuda":
        import torch

        vram = int(torch.cuda.mem_get_info()[0])
    return vram, int(psutil.virtual_memory().available)


def _folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def _cached_repo(model: str, cache_dir: str) -> tuple[int | None, int | None, str | None]:
    """Bytes, files and revision (main's, else any) of `model` in the Hub cache, or Nones."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    size = files = revision = None
    try:
        for repo in scan_cache_dir(cache_dir).repos:
            if repo.repo_id == model and repo.repo_type == "model":
                size, files = repo.size_on_disk, repo.nb_files
                for cached_revision in repo.revisions:
                    if "main" in cached_revision.refs or revision is None:
                        revision = cached_revision.commit_hash
    except CacheNotFound:
        pass
    return size, files, revision


def hub_facts(settings: Settings) -> HubFacts:
    """Say whether a token is configured and whether the model is already on disk."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    cache_dir = str(constants.HF_HUB_CACHE)
    common = {"token_configured": settings.has_token, "cache_dir": cache_dir}
    model = settings.model
    if model == DEMO_MODEL:
        return HubFacts(
            **common,
            model_kind="demo",
            cached=None,
            cached_bytes=None,
            cached_files=None,
            note="the demo model is built in memory; nothing to download",
        )
    path = Path(model).expanduser()
    problem = explain_local_path(model)
    if problem is not None:  # a folder that is missing or cannot be a pipeline
        size, count = _folder_size(path) if path.is_dir() else (None, None)
        return HubFacts(
            **common,
            model_kind="local folder",
            cached=None,
            cached_bytes=size,
            cached_files=count,
            note=problem,
            problem=problem,
        )
    if path.is_dir():
        size, count = _folder_size(path)
        return HubFacts(
            **common,
            model_kind="local folder",
            cached=None,
            cached_bytes=size,
            cached_files=count,
            note=f"SD_MODEL is a local folder: {quote(path, 300)}",
        )
    try:
        index = try_to_load_from_cache(model, "model_index.json", cache_dir=cache_dir)
    except HFValidationError:  # not a hub id either ("a b", "x//y"): say so, do not crash
        invalid = (
            f"SD_MODEL={quote(model, 300)} is neither an existing folder nor a valid hub id "
            "(such as stabilityai/stable-diffusion-3.5-medium)."
        )
        return HubFacts(
            **common,
            model_kind="hub",
            cached=None,
            cached_bytes=None,
            cached_files=None,
            note=invalid,
            problem=invalid,
        )
    size, files, revision = _cached_repo(model, cache_dir)
    cached = isinstance(index, str)
    total = f"~{full_size(family_for(settings).family).total_gb:.0f} GB"
    if cached:
        note = "in the local cache; loading reads it from disk"
    elif files:
        note = f"partly in the local cache; the first load downloads the rest ({total} in all)"
    else:
        note = f"not in the local cache; the first load downloads {total}"
    return HubFacts(
        **common,
        model_kind="hub",
        cached=cached,
        cached_bytes=size,
        cached_files=files,
        note=note,
        revision=revision,
    )
