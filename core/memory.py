"""Memory plans: will the model fit here, and what to give up so that it does.

`choose_memory_plan` is a pure function of free memory and the component sizes (a model
family's, `core.models`, or the files' own), so the Hardware page can show its verdict
before anything loads and the loader can apply it. No torch import here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.models import DEFAULT_FAMILY, Family
from core.settings import DEFAULT_VAE_TILE

GB = 1_000_000_000

# The SD3 pipeline's components that hold weights (each family gives their sizes).
COMPONENTS = ("transformer", "text_encoder_3", "text_encoder_2", "text_encoder", "vae")
DTYPE_FACTOR = {"bfloat16": 1.0, "float16": 1.0, "float32": 2.0}
# Activations while denoising 1024² and a tiled VAE decode, at bf16; scaled like the weights.
# Calibrated on the full-size stand-in (CPU, bf16): peak RSS 16.6–16.9 GB with T5 and
# 7.97 GB without, i.e. 0.6–1.2 GB above the weights; the 512-px tiled VAE alone peaks at
# 1.77 GB at 1024². 1.5 + 0.8 predicts 18.6 / 9.1 GB: above every measured peak.
WORKING_GB_BF16 = 1.5
# torch, Python and the app themselves, in RAM when the model runs on the CPU.
RUNTIME_GB = 0.8

OFFLOADS = ("none", "model", "sequential")
VERDICTS = ("fits", "needs offload", "needs drop-T5", "won't fit")
DROP_T5_NOTE = "prompts lose T5 conditioning: long or detailed prompts are followed less closely"
OFFLOAD_NEEDS_ACCELERATOR = (
    "SD_OFFLOAD={offload} moves weights between RAM and a CUDA GPU's own memory, but the "
    "model runs on {device} here, where every weight already lives in system RAM (accelerate "
    "refuses: it requires an accelerator). Set SD_OFFLOAD=none (or leave it unset)."
)


@dataclass(frozen=True)
class MemoryOptions:
    """The memory settings (SD_MEMORY, SD_OFFLOAD, SD_DROP_T5, SD_VAE_TILE); hashable."""

    memory: str = "auto"  # the app's default (Settings.memory), also load_pipeline's
    offload: str | None = None
    drop_t5: bool | None = None
    vae_tile: int = DEFAULT_VAE_TILE

    @classmethod
    def from_settings(cls, settings) -> MemoryOptions:
        return cls(settings.memory, settings.offload, settings.drop_t5, settings.vae_tile)


@dataclass(frozen=True)
class MemoryPlan:
    """How the pipeline is loaded to fit, the verdict, and the numbers behind it."""

    offload: str = "none"
    drop_t5: bool = False
    vae_tile: int = 0
    verdict: str = "fits"
    reason: str = ""
    needed_bytes: int = 0
    available_bytes: int | None = None

    @property
    def summary(self) -> str:
        parts = [f"offload {self.offload}", "without T5" if self.drop_t5 else "with T5"]
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


def _gb(n: int | float) -> str:
    return f"{n / 1e6:.1f} MB" if n < GB / 10 else f"{n / GB:.1f} GB"


def choose_memory_plan(
    free_vram_bytes: int | None,
    free_ram_bytes: int,
    *,
    device: str,
    dtype: str,
    offload: str | None = None,
    drop_t5: bool | None = None,
    vae_tile: int = 0,
    components: Mapping[str, int] | None = None,
) -> MemoryPlan:
    """Pick offload and drop-T5 from free memory; `offload`/`drop_t5` force a choice.

    `components` are the sizes in bytes (`component_bytes` of a family, or the files');
    without them, SD3.5 Medium's (the default family).

    The quality-preserving plan comes first: everything on the device, then model offload
    (same images, slower), then dropping T5 (fast, weaker prompt following), then both,
    then sequential offload (very slow). CPU and Apple GPUs (unified memory) budget RAM.
    """
    sizes = dict(components) if components is not None else component_bytes(dtype)
    factor = DTYPE_FACTOR.get(dtype, 2.0)
    working = int(WORKING_GB_BF16 * factor * GB)
    total = sum(sizes.values())
    without_t5 = total - sizes.get("text_encoder_3", 0)
    keep = {"vae_tile": vae_tile}

    def weights(drop: bool) -> int:
        return without_t5 if drop else total

    drops = [drop_t5] if drop_t5 is not None else [False, True]

    if device != "cuda":
        # Everything lives in one memory: RAM (CPU) or unified memory (Apple GPU).
        if offload not in (None, "none"):
            return MemoryPlan(
                offload=offload,
                drop_t5=bool(drop_t5),
                verdict="won't fit",
                reason=OFFLOAD_NEEDS_ACCELERATOR.format(offload=offload, device=device),
                **keep,
            )
        for drop in drops:
            needed = weights(drop) + working + RUNTIME_GB * GB
            if needed <= free_ram_bytes:
                verdict = "needs drop-T5" if drop and drop_t5 is None else "fits"
                why = f"; {DROP_T5_NOTE}" if drop else ""
                return MemoryPlan(
                    drop_t5=drop,
                    verdict=verdict,
                    reason=(
                        f"{_gb(weights(drop))} of {dtype} weights + {_gb(working)} working + "
                        f"{_gb(RUNTIME_GB * GB)} runtime = {_gb(needed)} ≤ "
                        f"{_gb(free_ram_bytes)} free RAM{why}"
                    ),
                    needed_bytes=int(needed),
                    available_bytes=free_ram_bytes,
                    **keep,
                )
        drop = drops[-1]
        needed = weights(drop) + working + RUNTIME_GB * GB
        return MemoryPlan(
            drop_t5=drop,
            verdict="won't fit",
            reason=(
                f"needs {_gb(needed)} ({'without' if drop else 'with'} T5, {dtype}) but only "
                f"{_gb(free_ram_bytes)} of RAM is free. Close other programs, use a machine "
                "with more memory or a GPU, or set SD_MODEL=demo to try the app."
            ),
            needed_bytes=int(needed),
            available_bytes=free_ram_bytes,
            **keep,
        )

    if free_vram_bytes is None:
        return MemoryPlan(
            offload=offload or "none",
            drop_t5=bool(drop_t5),
            verdict="fits",
            reason="free GPU memory is unknown; loading everything on the GPU",
            needed_bytes=weights(bool(drop_t5)) + working,
            **keep,
        )

    def on_gpu(plan: str, drop: bool) -> int:
        """Peak GPU memory of a plan: all weights, the largest one, or almost none."""
        used = {k: v for k, v in sizes.items() if not (drop and k == "text_encoder_3")}
        if plan == "none":
            return sum(used.values()) + working
        if plan == "model":
            return max(used.values()) + working
        return working  # sequential: one layer at a time

    candidates = [("none", False), ("model", False), ("none", True), ("model", True)]
    candidates += [("sequential", False), ("sequential", True)]
    for plan, drop in candidates:
        if offload is not None and plan != offload:
            continue
        if drop_t5 is not None and drop != drop_t5:
            continue
        peak = on_gpu(plan, drop)
        ram_needed = weights(drop) + RUNTIME_GB * GB if plan != "none" else 0
        if peak > free_vram_bytes or ram_needed > free_ram_bytes:
            continue
        if drop and drop_t5 is None:
            verdict = "needs drop-T5"
        elif plan != "none" and offload is None:
            verdict = "needs offload"
        else:
            verdict = "fits"
        reason = f"peak {_gb(peak)} on the GPU ≤ {_gb(free_vram_bytes)} free VRAM"
        if plan == "model":
            reason += "; components move to the GPU one at a time (slower)"
        if plan == "sequential":
            reason += "; layers stream from RAM one by one (much slower)"
        if ram_needed:
            reason += f"; {_gb(ram_needed)} of RAM holds the offloaded weights"
        if drop:
            reason += f"; {DROP_T5_NOTE}"
        return MemoryPlan(
            offload=plan,
            drop_t5=drop,
            verdict=verdict,
            reason=reason,
            needed_bytes=peak,
            available_bytes=free_vram_bytes,
            **keep,
        )
    plan = offload or "sequential"
    drop = bool(drop_t5) if drop_t5 is not None else True
    return MemoryPlan(
        offload=plan,
        drop_t5=drop,
        verdict="won't fit",
        reason=(
            f"even offload {plan} {'without' if drop else 'with'} T5 needs "
            f"{_gb(on_gpu(plan, drop))} of GPU memory ({_gb(free_vram_bytes)} free) and "
            f"{_gb(weights(drop) + RUNTIME_GB * GB)} of RAM ({_gb(free_ram_bytes)} free)"
        ),
        needed_bytes=on_gpu(plan, drop),
        available_bytes=free_vram_bytes,
        **keep,
    )


def plan_for(
    options: MemoryOptions,
    *,
    device: str,
    dtype: str,
    free_vram_bytes: int | None,
    free_ram_bytes: int,
    components: Mapping[str, int] | None = None,
) -> MemoryPlan:
    """Apply SD_MEMORY: auto chooses from free memory, manual takes the settings as set."""
    if options.memory == "manual":
        offload, drop = options.offload or "none", bool(options.drop_t5)
        if offload != "none" and device != "cuda":
            return MemoryPlan(
                offload=offload,
                drop_t5=drop,
                vae_tile=options.vae_tile,
                verdict="won't fit",
                reason=OFFLOAD_NEEDS_ACCELERATOR.format(offload=offload, device=device),
            )
        return MemoryPlan(
            offload=offload,
            drop_t5=drop,
            vae_tile=options.vae_tile,
            verdict="fits",
            reason="SD_MEMORY=manual: SD_OFFLOAD and SD_DROP_T5 as set, not checked against "
            "free memory",
        )
    return choose_memory_plan(
        free_vram_bytes,
        free_ram_bytes,
        device=device,
        dtype=dtype,
        offload=options.offload,
        drop_t5=options.drop_t5,
        vae_tile=options.vae_tile,
        components=components,
    )
