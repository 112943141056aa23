"""What a model family declares: one frozen `Family` per file in `core.models`.

A family is a set of checkpoints that share an architecture and the facts the app plans
with: which diffusers pipeline class runs each generation mode, how large each component
is (the memory planner), which sizes it takes, its card's defaults, and a first guess of
its speed (the time estimate). Plain data, no torch: pages read it before anything loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from core.slg import OFF as SLG_OFF
from core.slg import SkipLayerGuidance


@dataclass(frozen=True)
class SizeRules:
    """Valid image sides: `min`–`max` pixels, a multiple of `multiple`."""

    min: int
    max: int
    multiple: int

    def __post_init__(self) -> None:
        if self.min % self.multiple or self.max % self.multiple or self.min > self.max:
            raise ValueError(f"inconsistent size rules {self}")

    def nearest(self, value: int) -> tuple[int, ...]:
        """The valid sizes closest to `value`, one below and one above where they exist."""
        clamped = min(max(value, self.min), self.max)
        below = clamped - clamped % self.multiple
        above = below if below == clamped else below + self.multiple
        return tuple(sorted({s for s in (below, above) if self.min <= s <= self.max}))

    def snap(self, value: float) -> int:
        """Round a size to the nearest valid one."""
        snapped = int(round(value / self.multiple)) * self.multiple
        return min(max(snapped, self.min), self.max)

    def describe(self) -> str:
        """E.g. "512–1440, a multiple of 16"."""
        return f"{self.min}–{self.max}, a multiple of {self.multiple}"


@dataclass(frozen=True)
class StepPriors:
    """Seconds on a 2-core CPU in bfloat16, used before this process has timed a generation.

    `step_s_1024`: one denoising step at 1024² (with CFG, i.e. a batch of two, unless the
    family's defaults turn CFG off); `decode_s_1024`: the VAE decode of one 1024² image with
    512-px tiles; `encode_s`: encoding one prompt with the three text encoders.
    `measured` says whether the figures were timed or derived (the text says which).
    """

    step_s_1024: float
    decode_s_1024: float
    encode_s: float
    measured: bool


@dataclass(frozen=True, kw_only=True)
class Family:
    """One model family: a declaration, compared and hashed by its fields (`id` first)."""

    id: str  # the SD_MODEL_FAMILY value, e.g. "sd35-large-turbo"; stored in records
    label: str  # e.g. "SD3.5 Large Turbo"
    hub_ids: tuple[str, ...]  # Hub repositories of this family (matched case-insensitively)
    licence_url: str  # "" when there is no licence to accept
    gated: bool  # the Hub asks for the licence to be accepted before any download
    # Generation mode id (core.modes) → diffusers pipeline class name that runs it.
    pipelines: Mapping[str, str] = field(hash=False)
    # Pipeline component → weights in GB at bfloat16 (float16 the same, float32 twice).
    components_gb: Mapping[str, float] = field(hash=False)
    sizes: SizeRules
    width: int  # defaults of the generator form
    height: int
    steps: int
    guidance: float
    priors: StepPriors | None  # None: no honest figure before measuring (the demo)
    # The transformer's layer count: skip-layer guidance may only name layers it has.
    transformer_layers: int
    # Skip-layer guidance: the layers the generator offers (with diffusers' scale 2.8,
    # start 0.01, stop 0.2), and whether its toggle starts on for this family.
    slg_layers: tuple[int, ...] = (7, 8, 9)
    slg_on: bool = False
    # Quantized memory plans (core.quant_plan): each component's share of its weight bytes
    # held by `torch.nn.Linear` weights (what weight-only quantization shrinks); a component
    # left out counts 0 (never shrinks). Counted from the real configs on the meta device
    # (`python -m bench.quant_shares`).
    linear_share: Mapping[str, float] = field(default_factory=dict, hash=False)
    # Tables read by index, never whole (bf16 bytes per component): with memory-mapped
    # weights on a CPU only the rows used are paged in, so the planner leaves them out there.
    sparse_tables: Mapping[str, int] = field(default_factory=dict, hash=False)
    # Extra memory of one untiled VAE decode per megapixel at 16-bit (SD_VAE_TILE=auto).
    vae_decode_gb_per_mp: float = 2.35

    def __post_init__(self) -> None:
        # Read-only views: a declaration is shared by every session and never changes.
        object.__setattr__(self, "pipelines", MappingProxyType(dict(self.pipelines)))
        object.__setattr__(self, "components_gb", MappingProxyType(dict(self.components_gb)))
        object.__setattr__(self, "linear_share", MappingProxyType(dict(self.linear_share)))
        object.__setattr__(self, "sparse_tables", MappingProxyType(dict(self.sparse_tables)))
        for side in (self.width, self.height):
            if side not in self.sizes.nearest(side):
                raise ValueError(f"{self.id}: default size {side} breaks {self.sizes}")
        self.slg_defaults().check_layers(self.transformer_layers)  # its own must exist

    def slg_defaults(self) -> SkipLayerGuidance:
        """The SLG values the generator offers for this family."""
        return SkipLayerGuidance(layers=self.slg_layers)

    def slg_text(self) -> str:
        """Those values as the `slg` mode option writes them, e.g. "layers 7 8 9; …"."""
        return self.slg_defaults().infotext()

    def option_defaults(self) -> dict[str, Any]:
        """Mode options whose start value is this family's (SLG on or off)."""
        return {"slg": self.slg_text() if self.slg_on else SLG_OFF}

    @property
    def total_gb(self) -> float:
        """All weights at bfloat16, in GB."""
        return sum(self.components_gb.values())

    def supports(self, mode: str) -> bool:
        return mode in self.pipelines

    def pipeline_name(self, mode: str) -> str:
        """The diffusers class name that runs `mode`; ValueError (with the fix) if none does."""
        try:
            return self.pipelines[mode]
        except KeyError:
            known = ", ".join(self.pipelines)
            raise ValueError(
                f"{self.label} has no pipeline for the mode {mode!r}; it runs: {known}."
            ) from None
