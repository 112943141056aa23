"""Quantized memory plans: the cheapest trade that makes the model fit, with its numbers.

`plan_quantized` is a pure function of the component sizes, free memory and what this
machine can run (device, GPU compute capability, torchao / bitsandbytes installed), so the
Hardware page can list every candidate plan before anything loads and the loader can apply
the chosen one. `choose_vae_tile` decides `SD_VAE_TILE=auto` the same way. No torch import.

The candidates, in the order tried (each step keeps the trades of the one before it, and
within one quality level the faster plan comes first):

1. as is: every component in the load dtype, all on the device;
2. T5 in int8 (torchao weight-only): half of T5-XXL's memory, prompt following kept;
3. T5 int8 + model offload (CUDA only);
4. T5 int8 + the transformer in int8, or float8 on a GPU of compute capability ≥ 8.9;
5. the same + model offload (CUDA only);
6. drop T5 + the transformer quantized;
7. the same + model offload (CUDA only);
8. sequential offload, weights as is (CUDA only; accelerate streams plain tensors);
9. sequential offload without T5 (CUDA only).

A step whose quantization this machine cannot run (no torchao, an Apple GPU) falls back
to the unquantized form of that step, so without torchao the list is the old planner's:
as is → model offload → drop T5 → both → sequential.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from core.models import DEFAULT_FAMILY
from core.units import human_bytes as _gb  # the app's one byte formatter

GB = 1_000_000_000
DTYPE_FACTOR = {"bfloat16": 1.0, "float16": 1.0, "float32": 2.0}
# Activations while denoising 1024² and a tiled VAE decode, at bf16; scaled like the weights.
# Calibrated on the full-size stand-in (CPU, bf16): peak RSS 16.6–16.9 GB with T5 and
# 7.97 GB without, i.e. 0.6–1.2 GB above the weights; the 512-px tiled VAE alone peaks at
# 1.77 GB at 1024². 1.5 + 0.8 predicts 18.6 / 9.1 GB: above every measured peak.
WORKING_GB_BF16 = 1.5
# torch, Python and the app themselves, in RAM when the model runs on the CPU.
RUNTIME_GB = 0.8
DROP_T5_NOTE = "prompts lose T5 conditioning: long or detailed prompts are followed less closely"
OFFLOAD_NEEDS_ACCELERATOR = (
    "SD_OFFLOAD={offload} moves weights between RAM and a CUDA GPU's own memory, but the "
    "model runs on {device} here, where every weight already lives in system RAM (accelerate "
    "refuses: it requires an accelerator). Set SD_OFFLOAD=none (or leave it unset)."
)

QUANT_CHOICES = ("auto", "none", "t5-int8", "int8", "fp8", "nf4")
T5 = "text_encoder_3"
TRANSFORMER = "transformer"

# Share of each component's weight bytes held by `torch.nn.Linear` weights (the part that
# weight-only quantization shrinks) and the tables read by index only: each family declares
# its own (`core.models`); SD3.5 Medium's are the defaults.
LINEAR_SHARE = dict(DEFAULT_FAMILY.linear_share)
SPARSE_TABLE_BYTES_BF16 = dict(DEFAULT_FAMILY.sparse_tables)
# Bytes per quantized Linear weight: int8 and float8 one byte (per-row scales add < 0.1 %);
# NF4 half a byte plus one float32 absmax per 64-weight block.
BYTES_PER_WEIGHT = {"int8": 1.0, "fp8": 1.0, "nf4": 0.5 + 4 / 64}
# What each SD_QUANT value quantizes (component → method).
SCHEMES: dict[str, dict[str, str]] = {
    "none": {},
    "t5-int8": {T5: "int8"},
    "int8": {T5: "int8", TRANSFORMER: "int8"},
    "fp8": {T5: "int8", TRANSFORMER: "fp8"},
    "nf4": {T5: "nf4", TRANSFORMER: "nf4"},
}
FP8_MIN_CAPABILITY = (8, 9)  # float8 matmuls: Ada (8.9), Hopper (9.0) and newer

# Untiled VAE decode, extra memory per megapixel of the image at 16-bit: the family's
# (`Family.vae_decode_gb_per_mp`; SD3.5's 2.35, measured on the H200 and the CPU). 512-pixel
# tiles stay under 1.8 GB at any size, inside WORKING_GB_BF16.
UNTILED_DECODE_GB_PER_MP_BF16 = DEFAULT_FAMILY.vae_decode_gb_per_mp
DEFAULT_TILE = 512
# Headroom kept free on top of a prediction before "it fits" (allocator slack, other apps).
MIN_MARGIN_GB = 1.0
MARGIN_SHARE = 0.10

TRADES = {
    "t5-int8": "T5's weights in int8: pixels change slightly; prompt following kept",
    "int8": "T5 and the transformer in int8: pixels change",
    "fp8": "T5 in int8, the transformer in float8: pixels change",
    "nf4": "T5 and the transformer in NF4 (bitsandbytes): pixels change more",
    "model": "slower: components move to the GPU one at a time",
    "sequential": "much slower: layers stream from RAM one by one",
    "drop": DROP_T5_NOTE,
}


@dataclass(frozen=True)
class Machine:
    """What this machine can run: device, load dtype, GPU capability, quantization libraries."""

    device: str
    dtype: str = "bfloat16"
    capability: tuple[int, int] | None = None  # CUDA compute capability, e.g. (9, 0)
    torchao: bool = True
    bitsandbytes: bool = False
    # CPU with the weights memory-mapped (files loaded in their own dtype, bf16 for SD3.5):
    # sparse tables (SPARSE_TABLE_BYTES_BF16) are not counted. False: every byte counts.
    mapped_weights: bool = False


@dataclass(frozen=True)
class Candidate:
    """One way to load the model, its predicted peak, and what it gives up."""

    name: str
    quant: dict[str, str]  # component → "int8" / "fp8" / "nf4"; empty: as loaded
    offload: str = "none"
    drop_t5: bool = False
    peak_bytes: int = 0  # on the GPU (CUDA) or in RAM (CPU, Apple GPU)
    ram_bytes: int = 0  # RAM holding offloaded weights (CUDA offload), else 0
    weights_bytes: int = 0  # every kept component after quantization
    parts: dict[str, int] = field(default_factory=dict)  # each kept component's bytes
    fits: bool | None = None  # None: free memory unknown
    trades: str = "nothing: diffusers' own pixels at full speed"

    @property
    def quant_label(self) -> str:
        """Short record form, e.g. "t5:int8,transformer:fp8" ("none" when unquantized)."""
        return quant_label(self.quant)


@dataclass(frozen=True)
class QuantPlan:
    """The chosen candidate, every candidate with its numbers, and the VAE decision."""

    chosen: Candidate | None
    candidates: tuple[Candidate, ...]
    verdict: str  # fits / needs quantization / needs offload / needs drop-T5 / won't fit / refused
    reason: str
    available_bytes: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def summary(self) -> str:
        c = self.chosen
        if c is None:
            return self.verdict
        parts = [f"offload {c.offload}", "without T5" if c.drop_t5 else "with T5"]
        parts.append(f"quant {c.quant_label}")
        return " · ".join(parts)


def quant_label(quant: Mapping[str, str]) -> str:
    """ "t5:int8,transformer:fp8" for records and verify; "none" when nothing is quantized."""
    short = {T5: "t5", TRANSFORMER: "transformer"}
    if not quant:
        return "none"
    return ",".join(f"{short.get(k, k)}:{v}" for k, v in sorted(quant.items(), key=_order))


def _order(item: tuple[str, str]) -> int:
    return [T5, TRANSFORMER].index(item[0]) if item[0] in (T5, TRANSFORMER) else 9


def quantized_bytes(size: int, method: str | None, *, dtype: str, share: float) -> int:
    """Bytes of a component of `size` bytes in `dtype` once its Linear weights use `method`."""
    if not method:
        return int(size)
    element = 2 * DTYPE_FACTOR.get(dtype, 2.0)  # bytes per weight as loaded
    linear = size * share
    return int(size - linear + linear / element * BYTES_PER_WEIGHT[method])


def refusal(quant: str, machine: Machine) -> str | None:
    """Why SD_QUANT=`quant` cannot run on this machine, or None when it can."""
    if quant in ("auto", "none"):
        return None
    if quant not in SCHEMES:
        return f"SD_QUANT={quant} is not one of: {', '.join(QUANT_CHOICES)}."
    if quant == "nf4":
        if machine.device != "cuda":
            return (
                f"SD_QUANT=nf4 needs a CUDA GPU (bitsandbytes' 4-bit kernels); the model runs on "
                f"{machine.device} here. Use SD_QUANT=int8 or t5-int8 (torchao, any device)."
            )
        if not machine.bitsandbytes:
            return "SD_QUANT=nf4 needs bitsandbytes: pip install bitsandbytes (CUDA only)."
        return None
    if not machine.torchao:
        return f"SD_QUANT={quant} needs torchao: pip install torchao (make install includes it)."
    if machine.device == "mps":
        return (
            f"SD_QUANT={quant} is not tried on Apple GPUs; set SD_QUANT=none, or SD_DEVICE=cpu "
            "to quantize on the CPU."
        )
    if quant == "fp8":
        if machine.device != "cuda":
            return (
                f"SD_QUANT=fp8 needs a CUDA GPU of compute capability ≥ 8.9 (Ada, Hopper or "
                f"newer); the model runs on {machine.device} here. Use SD_QUANT=int8."
            )
        cap = machine.capability
        if cap is not None and tuple(cap) < FP8_MIN_CAPABILITY:
            return (
                f"SD_QUANT=fp8 needs compute capability ≥ 8.9 for float8 matmuls; this GPU has "
                f"{cap[0]}.{cap[1]}. Use SD_QUANT=int8 (same memory)."
            )
    return None


def _transformer_method(machine: Machine) -> str:
    cap = machine.capability
    if machine.device == "cuda" and cap is not None and tuple(cap) >= FP8_MIN_CAPABILITY:
        return "fp8"
    return "int8"


def _ladder(machine: Machine) -> list[tuple[str, dict[str, str], str, bool]]:
    """(name, quant, offload, drop_t5) in the order tried, for SD_QUANT=auto."""
    tq = _transformer_method(machine)
    int8_ok = machine.torchao and machine.device in ("cpu", "cuda")
    t5q = {T5: "int8"} if int8_ok else {}
    both = {**t5q, TRANSFORMER: tq} if int8_ok else {}
    only_tq = {TRANSFORMER: tq} if int8_ok else {}
    cuda = machine.device == "cuda"
    steps = [
        ("as is", {}, "none", False),
        ("T5 int8", t5q, "none", False),
        ("T5 int8 + model offload", t5q, "model", False),
        (f"T5 int8 + transformer {tq}", both, "none", False),
        (f"T5 int8 + transformer {tq} + model offload", both, "model", False),
        (f"drop T5 + transformer {tq}", only_tq, "none", True),
        (f"drop T5 + transformer {tq} + model offload", only_tq, "model", True),
        ("sequential offload", {}, "sequential", False),
        ("sequential offload without T5", {}, "sequential", True),
    ]
    out, seen = [], set()
    for name, quant, offload, drop in steps:
        if offload != "none" and not cuda:
            continue
        key = (tuple(sorted(quant.items())), offload, drop)
        if key in seen:
            continue
        seen.add(key)
        out.append((_rename(name, quant, offload, drop), quant, offload, drop))
    return out


def _rename(name: str, quant: Mapping[str, str], offload: str, drop: bool) -> str:
    """A fallen-back step (no quantization here) is named by what it really does."""
    if quant or offload == "sequential":
        return name
    parts = ["drop T5"] if drop else []
    if offload == "model":
        parts.append("model offload")
    return " + ".join(parts) or "as is"


def _forced(quant: str) -> list[tuple[str, dict[str, str], str, bool]]:
    """The candidates SD_QUANT=`quant` allows (quantization fixed; offload and T5 free)."""
    scheme = SCHEMES[quant]
    label = quant if quant != "none" else "no quantization"
    out = []
    for offload, drop in (("none", False), ("model", False), ("none", True), ("model", True)):
        q = {k: v for k, v in scheme.items() if not (drop and k == T5)}
        if scheme and not q:
            continue  # SD_QUANT=t5-int8 keeps T5: dropping it would quantize nothing
        parts = [label] + (["model offload"] if offload == "model" else [])
        parts += ["drop T5"] if drop else []
        out.append((" + ".join(parts), q, offload, drop))
    if quant == "none":
        out += [("sequential offload", {}, "sequential", False)]
        out += [("sequential offload without T5", {}, "sequential", True)]
    return out


def _trades(quant: Mapping[str, str], offload: str, drop: bool) -> str:
    said = []
    methods = set(quant.values())
    if "nf4" in methods:
        said.append(TRADES["nf4"])
    elif TRANSFORMER in quant:
        key = "fp8" if quant[TRANSFORMER] == "fp8" else "int8"
        words = "float8" if key == "fp8" else "int8"
        said.append(TRADES[key] if T5 in quant else f"the transformer in {words}: pixels change")
    elif T5 in quant:
        said.append(TRADES["t5-int8"])
    if offload != "none":
        said.append(TRADES[offload])
    if drop:
        said.append(TRADES["drop"])
    return "; ".join(said) or Candidate.trades


def _measure(
    name: str,
    quant: dict[str, str],
    offload: str,
    drop: bool,
    *,
    sizes: Mapping[str, int],
    dtype: str,
    share: Mapping[str, float],
    machine: Machine,
    sparse: Mapping[str, int],
) -> Candidate:
    """Predict the candidate's peak like `core.memory`: weights + working (+ runtime on RAM)."""
    kept = {
        k: quantized_bytes(v, quant.get(k), dtype=dtype, share=share.get(k, 0.0))
        for k, v in sizes.items()
        if not (drop and k == T5)
    }
    weights = sum(kept.values())
    if machine.mapped_weights and machine.device != "cuda":
        # Paged in by row, if at all; never more than the component (a smaller model
        # planned with Medium's rules).
        weights -= sum(min(sparse.get(k, 0), v) for k, v in kept.items())
    working = int(WORKING_GB_BF16 * DTYPE_FACTOR.get(dtype, 2.0) * GB)
    runtime = int(RUNTIME_GB * GB)
    ram = 0
    if machine.device != "cuda":
        peak = weights + working + runtime
    elif offload == "none":
        peak = weights + working
    elif offload == "model":
        peak = max(kept.values(), default=0) + working
        ram = weights + runtime
    else:  # sequential: one layer at a time on the GPU
        peak, ram = working, weights + runtime
    return Candidate(
        name=name,
        quant=quant,
        offload=offload,
        drop_t5=drop,
        peak_bytes=int(peak),
        ram_bytes=int(ram),
        weights_bytes=int(weights),
        parts=kept,
        trades=_trades(quant, offload, drop),
    )


def candidate(
    components: Mapping[str, int],
    *,
    machine: Machine,
    quant: Mapping[str, str],
    offload: str = "none",
    drop_t5: bool = False,
    linear_share: Mapping[str, float] = LINEAR_SHARE,
    sparse_tables: Mapping[str, int] = SPARSE_TABLE_BYTES_BF16,
) -> Candidate:
    """One plan's numbers as set (SD_MEMORY=manual: not checked against free memory)."""
    parts = [quant_label(quant) if quant else "no quantization"]
    parts += [f"{offload} offload"] if offload != "none" else []
    parts += ["drop T5"] if drop_t5 else []
    return _measure(
        " + ".join(parts), dict(quant), offload, drop_t5, sizes=components,
        dtype=machine.dtype, share=linear_share, machine=machine, sparse=sparse_tables,
    )  # fmt: skip


def _fits(c: Candidate, machine: Machine, free_vram: int | None, free_ram: int) -> bool | None:
    if machine.device != "cuda":
        return c.peak_bytes <= free_ram
    if free_vram is None:
        return None
    return c.peak_bytes <= free_vram and c.ram_bytes <= free_ram


def _verdict(
    c: Candidate, *, first: bool, quant: str, offload: str | None, drop: bool | None
) -> str:
    """What the user gives up that they did not ask for; "fits" for the first plan tried."""
    if first:
        return "fits"
    if c.drop_t5 and drop is None:
        return "needs drop-T5"
    if c.quant and quant == "auto":
        return "needs quantization"
    if c.offload != "none" and offload is None:
        return "needs offload"
    return "fits"


def plan_quantized(
    components: Mapping[str, int],
    *,
    machine: Machine,
    free_vram_bytes: int | None,
    free_ram_bytes: int,
    quant: str = "auto",
    offload: str | None = None,
    drop_t5: bool | None = None,
    linear_share: Mapping[str, float] = LINEAR_SHARE,
    sparse_tables: Mapping[str, int] = SPARSE_TABLE_BYTES_BF16,
) -> QuantPlan:
    """Try the candidates in order; the first that fits is chosen.

    `components` are the weight bytes per component in `machine.dtype` (as
    `core.memory.component_bytes` gives them). `quant` is SD_QUANT: `auto` walks the whole
    ladder, another value keeps only the candidates with that quantization (and refuses
    when this machine cannot run it). `offload` / `drop_t5` (SD_OFFLOAD / SD_DROP_T5)
    filter the candidates as in `core.memory.choose_memory_plan`. `linear_share` and
    `sparse_tables` describe the family (SD3.5 Medium's by default).
    """
    refused = refusal(quant, machine)
    if refused:
        return QuantPlan(None, (), "refused", refused)
    if offload not in (None, "none") and machine.device != "cuda":
        why = OFFLOAD_NEEDS_ACCELERATOR.format(offload=offload, device=machine.device)
        return QuantPlan(None, (), "refused", why)
    steps = _ladder(machine) if quant == "auto" else _forced(quant)
    if machine.device != "cuda":
        steps = [s for s in steps if s[2] == "none"]
    notes = []
    if quant == "auto" and not (machine.torchao and machine.device in ("cpu", "cuda")):
        why = "torchao is not installed" if not machine.torchao else "untried on Apple GPUs"
        notes.append(f"no int8 plans: {why}")
    candidates = []
    for name, q, off, drop in steps:
        c = _measure(
            name, q, off, drop, sizes=components, dtype=machine.dtype,
            share=linear_share, machine=machine, sparse=sparse_tables,
        )  # fmt: skip
        fits = _fits(c, machine, free_vram_bytes, free_ram_bytes)
        candidates.append(_replace(c, fits=fits))
    allowed = [
        c
        for c in candidates
        if (offload is None or c.offload == offload) and (drop_t5 is None or c.drop_t5 == drop_t5)
    ]
    available = free_ram_bytes if machine.device != "cuda" else free_vram_bytes
    if not allowed:
        return QuantPlan(None, tuple(candidates), "won't fit", "no candidate matches "
                         "SD_OFFLOAD / SD_DROP_T5 with this SD_QUANT", available)  # fmt: skip
    for index, c in enumerate(allowed):
        if c.fits is False:
            continue
        reason = (
            f"{c.name}: {_numbers(c, machine)} ≤ {_gb(available)} free "
            f"{'RAM' if machine.device != 'cuda' else 'VRAM'}"
            if c.fits
            else f"{c.name}: free GPU memory is unknown; trying the first plan"
        )
        if c.ram_bytes:
            reason += f"; {_gb(c.ram_bytes)} of RAM holds the offloaded weights"
        if c.trades != Candidate.trades:
            reason += f"; {c.trades}"
        verdict = _verdict(c, first=index == 0, quant=quant, offload=offload, drop=drop_t5)
        return QuantPlan(c, tuple(candidates), verdict, reason, available, tuple(notes))
    last = allowed[-1]
    where = "RAM" if machine.device != "cuda" else "GPU memory"
    reason = (
        f"even {last.name} needs {_gb(last.peak_bytes)} of {where} ({_gb(available or 0)} free)"
    )
    if last.ram_bytes:
        reason += f" and {_gb(last.ram_bytes)} of RAM ({_gb(free_ram_bytes)} free)"
    return QuantPlan(None, tuple(candidates), "won't fit", reason, available, tuple(notes))


def _numbers(c: Candidate, machine: Machine) -> str:
    """How a candidate's peak adds up, e.g. "16.3 GB of bfloat16 weights + … = 18.6 GB"."""
    factor = DTYPE_FACTOR.get(machine.dtype, 2.0)
    working = _gb(WORKING_GB_BF16 * factor * GB)
    if machine.device != "cuda":
        mapped = " (sparse tables paged in by row)" if machine.mapped_weights else ""
        return (
            f"{_gb(c.weights_bytes)} of {machine.dtype} weights{mapped} + {working} working + "
            f"{_gb(RUNTIME_GB * GB)} runtime = {_gb(c.peak_bytes)}"
        )
    held = {"none": "all weights", "model": "the largest component", "sequential": "one layer"}
    return f"peak {_gb(c.peak_bytes)} on the GPU ({held[c.offload]} + {working} working)"


def _replace(c: Candidate, **changes) -> Candidate:
    from dataclasses import replace

    return replace(c, **changes)


def untiled_decode_bytes(
    width: int, height: int, *, dtype: str, gb_per_mp: float = UNTILED_DECODE_GB_PER_MP_BF16
) -> int:
    """Extra memory of one untiled VAE decode at `width`×`height` (`gb_per_mp` at 16-bit:
    the family's `vae_decode_gb_per_mp`)."""
    megapixels = width * height / 1e6
    return int(gb_per_mp * DTYPE_FACTOR.get(dtype, 2.0) * megapixels * GB)


def choose_vae_tile(
    setting: str | int,
    *,
    chosen: Candidate | None,
    machine: Machine,
    available_bytes: int | None,
    width: int,
    height: int,
    tile: int = DEFAULT_TILE,
    decode_gb_per_mp: float = UNTILED_DECODE_GB_PER_MP_BF16,
) -> tuple[int, str]:
    """SD_VAE_TILE: a number is kept; `auto` tiles only when an untiled decode would not fit.

    Return (tile side in pixels, 0 for untiled; the reason). With `auto`, the decode of a
    `width`×`height` image (the largest the app allows, so one decision holds for every
    request) runs beside the weights still on the device then (all of them without
    offload, the VAE alone with model offload), with a margin of max(1 GB, 10 %) kept free.
    `decode_gb_per_mp` is the family's untiled decode cost (`Family.vae_decode_gb_per_mp`).
    Unknown free memory or no plan: tile (the safe side).
    """
    if setting != "auto":
        tile_px = int(setting)
        return tile_px, "SD_VAE_TILE as set" if tile_px else "SD_VAE_TILE=0: untiled"
    if chosen is None or available_bytes is None:
        return tile, "free memory unknown: tiles on the safe side"
    decode = untiled_decode_bytes(width, height, dtype=machine.dtype, gb_per_mp=decode_gb_per_mp)
    working = int(WORKING_GB_BF16 * DTYPE_FACTOR.get(machine.dtype, 2.0) * GB)
    if machine.device == "cuda" and chosen.offload != "none":
        # Model offload brings the VAE in alone; sequential streams it layer by layer.
        resident = 0 if chosen.offload == "sequential" else chosen.parts.get("vae", 0)
        runtime = 0
    else:
        resident = chosen.weights_bytes
        runtime = int(RUNTIME_GB * GB) if machine.device != "cuda" else 0
    needed = resident + max(decode, working) + runtime
    margin = max(int(MIN_MARGIN_GB * GB), int(available_bytes * MARGIN_SHARE))
    size = f"{width}×{height}"
    if needed + margin <= available_bytes:
        return 0, (
            f"untiled: a {size} decode needs {_gb(needed)} with the weights, "
            f"{_gb(available_bytes)} free (margin {_gb(margin)})"
        )
    return tile, (
        f"{tile}-px tiles: an untiled {size} decode would need {_gb(needed)} with the weights, "
        f"more than {_gb(available_bytes)} free less a {_gb(margin)} margin"
    )
