"""How long a generation will take here, from this process's measured speed.

Generations record seconds per denoising step and per VAE decode for their size; an
estimate scales the nearest measured size. Before the first image of the real model, the
model family's priors stand in (`core.models`: SD3.5 Medium's measured on the full-size
stand-in, 2-core CPU, bf16; Large's derived from Medium's by compute).
Plain Python, no torch: the Generate page calls it before every click.
"""

from __future__ import annotations

import platform
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.demo import DEMO_MODEL
from core.models import DEFAULT_FAMILY, Family, StepPriors, family_for

if TYPE_CHECKING:
    from core.generation import Backend

REFERENCE_PIXELS = 1024 * 1024
# Step time grows faster than the pixel count (attention over 4× the tokens): 512² steps
# took 6.5–9 s and 1024² steps 51 s on the stand-in, 4× the pixels for ~7× the time.
STEP_EXPONENT = 1.4
DRAFT_SIDE, DRAFT_STEPS = 512, 20
DRAFT_OFFER_S = 180.0  # offer the draft preset above three minutes


@dataclass(frozen=True)
class Estimate:
    seconds: float
    measured: bool  # from this process's own generations, not the stand-in's figures
    device: str

    @property
    def worth_a_draft(self) -> bool:
        return self.seconds > DRAFT_OFFER_S


def draft_for(family: Family) -> dict[str, int]:
    """The draft preset for `family`: a square of 512 (its nearest valid side) and 20 steps,
    never more than its own default steps (Large Turbo's draft keeps its 4)."""
    side = family.sizes.snap(DRAFT_SIDE)
    return {"width": side, "height": side, "steps": min(DRAFT_STEPS, family.steps)}


@dataclass
class _Speed:
    step_s: float
    decode_s: float
    encode_s: float


class SpeedLog:
    """Seconds per step / decode per (model, device, pixels); thread-safe, process-wide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._speeds: dict[tuple[str, str, int], _Speed] = {}

    def record(
        self,
        *,
        model: str,
        device: str,
        width: int,
        height: int,
        step_seconds: float,
        decode_seconds: float,
        encode_seconds: float | None = None,
    ) -> None:
        key = (model, device, width * height)
        with self._lock:
            old = self._speeds.get(key)
            encode = encode_seconds
            if encode is None:
                encode = old.encode_s if old else 0.0
            if old is not None:  # a running average that follows a machine getting busier
                step_seconds = 0.5 * (old.step_s + step_seconds)
                decode_seconds = 0.5 * (old.decode_s + decode_seconds)
            self._speeds[key] = _Speed(step_seconds, decode_seconds, encode)

    def clear(self) -> None:
        with self._lock:
            self._speeds.clear()

    def estimate(
        self,
        *,
        model: str,
        device: str,
        width: int,
        height: int,
        steps: int,
        images: int,
        priors: StepPriors | None = DEFAULT_FAMILY.priors,
    ) -> Estimate | None:
        """Seconds for a request here, or None when nothing honest can be said.

        Before a measurement, a CPU's figure comes from `priors` (the model family's).
        """
        pixels = width * height
        with self._lock:
            known = {p: s for (m, d, p), s in self._speeds.items() if (m, d) == (model, device)}
        if known:
            nearest = min(known, key=lambda p: abs(p - pixels))
            speed, ratio = known[nearest], pixels / nearest
            per_image = steps * speed.step_s * ratio**STEP_EXPONENT + speed.decode_s * ratio
            return Estimate(per_image * images + speed.encode_s, True, device)
        if model == DEMO_MODEL or priors is None or device != "cpu":
            return None  # the demo is tiny; GPUs vary too much for a figure before measuring
        ratio = pixels / REFERENCE_PIXELS
        per_image = steps * priors.step_s_1024 * ratio**STEP_EXPONENT
        per_image += priors.decode_s_1024 * ratio
        return Estimate(per_image * images + priors.encode_s, False, device)


SPEEDS = SpeedLog()


def describe_estimate(estimate: Estimate, *, width: int, height: int, steps: int) -> str:
    """E.g. "≈ 35 min at 1024², 40 steps on this CPU"."""
    from core.units import human_duration

    size = f"{width}²" if width == height else f"{width}×{height}"
    where = {"cpu": "this CPU", "cuda": "this GPU", "mps": "this Apple GPU"}.get(
        estimate.device, estimate.device
    )
    text = f"≈ {human_duration(estimate.seconds)} at {size}, {steps} steps on {where}"
    if not estimate.measured:
        text += " (from a 2-core CPU's figures; measured here after the first image)"
    return text


def likely_device(requested: str) -> str:
    """The device SD_DEVICE=auto will pick, guessed without importing torch."""
    if requested != "auto":
        return requested
    if Path("/proc/driver/nvidia/gpus").is_dir():
        return "cuda"
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return "mps"
    return "cpu"


def estimate_for(
    backend: Backend, settings: Any, *, width: int, height: int, steps: int, images: int
) -> Estimate | None:
    """The estimate for the form's values on this backend (None for remote ones)."""
    facts = backend.describe()
    if facts.backend != "local":
        return None
    device = facts.device or likely_device(settings.device)  # the device it loaded on, if any
    return SPEEDS.estimate(
        model=settings.model,
        device=device,
        width=width,
        height=height,
        steps=steps,
        images=images,
        priors=family_for(settings).family.priors,
    )
