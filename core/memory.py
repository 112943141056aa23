"""Memory plans: will the model fit here, and what to give up so that it does.

`plan_for` applies the memory settings (SD_MEMORY, SD_OFFLOAD, SD_DROP_T5, SD_QUANT,
SD_VAE_TILE) to free memory and the component sizes (a model family's, `core.models`, or
the files' own) through the quantized planner (`core.quant_plan`): every candidate plan
with its predicted peak and what it trades, the one chosen, and the VAE decision. A pure
function, so the Hardware page can show the verdict before anything loads and the loader
can apply it. No torch import here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.models import DEFAULT_FAMILY, Family
from core.quant_plan import (  # the planner's numbers and words, for the pages too
    DROP_T5_NOTE as DROP_T5_NOTE,
)
from core.quant_plan import (
    DTYPE_FACTOR,
    GB,
    OFFLOAD_NEEDS_ACCELERATOR,
    SCHEMES,
    Candidate,
    Machine,
    QuantPlan,
    candidate,
    choose_vae_tile,
    plan_quantized,
    quant_label,
    refusal,
)
from core.settings import VAE_TILE_AUTO

# The SD3 pipeline's components that hold weights (each family gives their sizes).
COMPONENTS = ("transformer", "text_encoder_3", "text_encoder_2", "text_encoder", "vae")
OFFLOADS = ("none", "model", "sequential")
VERDICTS = (
    "fits",
    "needs quantization",
    "needs offload",
    "needs drop-T5",
    "won't fit",
    "refused",
)


@dataclass(frozen=True)
class MemoryOptions:
    """The memory settings (SD_MEMORY, SD_OFFLOAD, SD_DROP_T5, SD_VAE_TILE, SD_QUANT)."""

    memory: str = "auto"  # the app's default (Settings.memory), also load_pipeline's
    offload: str | None = None
    drop_t5: bool | None = None
    vae_tile: int | str = VAE_TILE_AUTO  # "auto", 0 (untiled) or a tile side in pixels
    quant: str = "auto"

    @classmethod
    def from_settings(cls, settings) -> MemoryOptions:
        return cls(
            settings.memory, settings.offload, settings.drop_t5, settings.vae_tile, settings.quant
        )


@dataclass(frozen=True)
class MemoryPlan:
    """How the pipeline is loaded to fit, the verdict, and the numbers behind it.

    `quant` is (component, method) pairs ("int8", "fp8", "nf4"); `candidates` every plan
    the planner weighed, in the order tried, with its predicted peak and trades
    (`core.quant_plan.Candidate`); `chosen` the name of the one taken ("" when none);
    `vae_reason` why the VAE is tiled or not.
    """

    offload: str = "none"
    drop_t5: bool = False
    vae_tile: int = 0
    verdict: str = "fits"
    reason: str = ""
    needed_bytes: int = 0
    available_bytes: int | None = None
    quant: tuple[tuple[str, str], ...] = ()
    chosen: str = ""
    candidates: tuple[Candidate, ...] = field(default=(), compare=False)
    notes: tuple[str, ...] = ()
    vae_reason: str = ""

    @property
    def quant_map(self) -> dict[str, str]:
        """Component → quantization method, as `core.quantize.quantize_pipeline` takes it."""
        return dict(self.quant)

    @property
    def quant_label(self) -> str:
        """ "t5:int8,transformer:fp8", or "none"."""
        return quant_label(self.quant_map)

    @property
    def summary(self) -> str:
        parts = [f"offload {self.offload}", "without T5" if self.drop_t5 else "with T5"]
        if self.quant:
            parts.append(f"quantized {self.quant_label}")
        parts.append(f"VAE tiles {self.vae_tile} px" if self.vae_tile else "VAE untiled")
        return " · ".join(parts)


def component_bytes(dtype: str, family: Family = DEFAULT_FAMILY) -> dict[str, int]:
    """Return `family`'s component sizes in bytes for `dtype` (default: SD3.5 Medium)."""
    factor = DTYPE_FACTOR.get(dtype, 2.0)
    return {name: int(gb * factor * GB) for name, gb in family.components_gb.items()}


def components_in_folder(folder, dtype: str) -> dict[str, int]:
    """Sizes of a pipeline folder's weights as `dtype` (files assumed 16-bit: safe side)."""
    from pathlib import Path

    factor = DTYPE_FACTOR.get(dtype, 2.0)
    sizes = {}
    for name in COMPONENTS:
        files = Path(folder, name).glob("*.safetensors")
        sizes[name] = int(sum(f.stat().st_size for f in files) * factor)
    return sizes


def components_from_sizes(sizes: Mapping[str, int], dtype: str) -> dict[str, int]:
    """Component sizes as `dtype` from a repo's file list (safetensors in each folder)."""
    factor = DTYPE_FACTOR.get(dtype, 2.0)
    out = dict.fromkeys(COMPONENTS, 0)
    for path, size in sizes.items():
        folder, _, name = path.partition("/")
        if folder in out and name.endswith(".safetensors") and "/" not in name:
            out[folder] += int(size * factor)
    return out


def default_machine(
    device: str,
    dtype: str,
    *,
    capability: tuple[int, int] | None = None,
    mapped_weights: bool = False,
) -> Machine:
    """This machine for the planner, libraries looked up without importing them."""
    return Machine(
        device=device,
        dtype=dtype,
        capability=capability,
        torchao=importlib.util.find_spec("torchao") is not None,
        bitsandbytes=importlib.util.find_spec("bitsandbytes") is not None,
        mapped_weights=mapped_weights,
    )


def choose_memory_plan(
    free_vram_bytes: int | None,
    free_ram_bytes: int,
    *,
    device: str,
    dtype: str,
    offload: str | None = None,
    drop_t5: bool | None = None,
    vae_tile: int | str = 0,
    components: Mapping[str, int] | None = None,
    quant: str = "none",
    machine: Machine | None = None,
    family: Family = DEFAULT_FAMILY,
) -> MemoryPlan:
    """Pick offload, drop-T5 (and with `quant`, quantization) from free memory.

    `offload`/`drop_t5` force a choice; `quant` is SD_QUANT (`none` here: the plans without
    quantization, in their quality-preserving order — everything on the device, model
    offload, drop T5, both, sequential offload; `auto`: the quantized ladder of
    `core.quant_plan`). `components` are the sizes in bytes (`component_bytes` of a family,
    or the files'); without them, `family`'s.
    """
    options = MemoryOptions(offload=offload, drop_t5=drop_t5, vae_tile=vae_tile, quant=quant)
    return plan_for(
        options,
        device=device,
        dtype=dtype,
        free_vram_bytes=free_vram_bytes,
        free_ram_bytes=free_ram_bytes,
        components=components,
        machine=machine,
        family=family,
    )


def _vae(
    options: MemoryOptions,
    chosen: Candidate | None,
    machine: Machine,
    available: int | None,
    family: Family,
) -> tuple[int, str]:
    """SD_VAE_TILE for this plan, decided for the family's largest image."""
    side = family.sizes.max
    return choose_vae_tile(
        options.vae_tile,
        chosen=chosen,
        machine=machine,
        available_bytes=available,
        width=side,
        height=side,
        decode_gb_per_mp=family.vae_decode_gb_per_mp,
    )


def _fallback(plan: QuantPlan, options: MemoryOptions) -> Candidate | None:
    """The plan closest to fitting when none does: the last one allowed by the settings."""
    allowed = [
        c
        for c in plan.candidates
        if (options.offload is None or c.offload == options.offload)
        and (options.drop_t5 is None or c.drop_t5 == options.drop_t5)
    ]
    return allowed[-1] if allowed else None


def plan_for(
    options: MemoryOptions,
    *,
    device: str,
    dtype: str,
    free_vram_bytes: int | None,
    free_ram_bytes: int,
    components: Mapping[str, int] | None = None,
    machine: Machine | None = None,
    family: Family = DEFAULT_FAMILY,
) -> MemoryPlan:
    """Apply SD_MEMORY: auto chooses from free memory, manual takes the settings as set.

    `machine` says what this machine can run (GPU capability, torchao, memory-mapped
    weights); without it, `default_machine(device, dtype)`. `family` gives the Linear
    shares and sparse tables the quantized sizes are computed with, and its largest image
    size and decode cost for SD_VAE_TILE=auto.
    """
    machine = machine or default_machine(device, dtype)
    sizes = dict(components) if components is not None else component_bytes(dtype, family)
    if options.memory == "manual":
        return _manual(options, sizes, machine, family, free_vram_bytes, free_ram_bytes)
    plan = plan_quantized(
        sizes,
        machine=machine,
        free_vram_bytes=free_vram_bytes,
        free_ram_bytes=free_ram_bytes,
        quant=options.quant,
        offload=options.offload,
        drop_t5=options.drop_t5,
        linear_share=family.linear_share,
        sparse_tables=family.sparse_tables,
    )
    shown = plan.chosen or _fallback(plan, options)
    vae_tile, vae_reason = _vae(options, plan.chosen, machine, plan.available_bytes, family)
    return MemoryPlan(
        offload=shown.offload if shown else options.offload or "none",
        drop_t5=shown.drop_t5 if shown else bool(options.drop_t5),
        vae_tile=vae_tile,
        verdict=plan.verdict,
        reason=plan.reason,
        needed_bytes=shown.peak_bytes if shown else 0,
        available_bytes=plan.available_bytes,
        quant=tuple(shown.quant.items()) if shown else (),
        chosen=plan.chosen.name if plan.chosen else "",
        candidates=plan.candidates,
        notes=plan.notes,
        vae_reason=vae_reason,
    )


def _manual(
    options: MemoryOptions,
    sizes: Mapping[str, int],
    machine: Machine,
    family: Family,
    free_vram: int | None,
    free_ram: int,
) -> MemoryPlan:
    """SD_MEMORY=manual: SD_OFFLOAD, SD_DROP_T5 and SD_QUANT as set (auto: none)."""
    offload, drop = options.offload or "none", bool(options.drop_t5)
    quant_setting = "none" if options.quant == "auto" else options.quant
    refused = refusal(quant_setting, machine)
    if offload != "none" and machine.device != "cuda":
        refused = OFFLOAD_NEEDS_ACCELERATOR.format(offload=offload, device=machine.device)
    tile = options.vae_tile if options.vae_tile != VAE_TILE_AUTO else 0
    if refused:
        return MemoryPlan(offload, drop, int(tile), verdict="refused", reason=refused)
    quant = {
        k: v
        for k, v in SCHEMES.get(quant_setting, {}).items()
        if not (drop and k == "text_encoder_3")
    }
    chosen = candidate(
        sizes,
        machine=machine,
        quant=quant,
        offload=offload,
        drop_t5=drop,
        linear_share=family.linear_share,
        sparse_tables=family.sparse_tables,
    )
    available = free_vram if machine.device == "cuda" else free_ram
    vae_tile, vae_reason = _vae(options, chosen, machine, available, family)
    return MemoryPlan(
        offload=offload,
        drop_t5=drop,
        vae_tile=vae_tile,
        verdict="fits",
        reason="SD_MEMORY=manual: SD_OFFLOAD, SD_DROP_T5 and SD_QUANT as set, not checked "
        "against free memory",
        needed_bytes=chosen.peak_bytes,
        available_bytes=available,
        quant=tuple(quant.items()),
        chosen=chosen.name,
        candidates=(chosen,),
        vae_reason=vae_reason,
    )
