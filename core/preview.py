"""Live preview while SD3 denoises: a cheap guess of the finished image, every few steps.

The guess is ComfyUI's linear latent→RGB projection for SD3 (`comfy/latent_formats.py`,
class `SD3`: one 16×3 matrix and a bias, fitted by ComfyUI to map SD3's latents, in the
model space the sampler works in, to RGB in −1…1) applied to an estimate of the *clean*
latents rather than to the noisy ones, which would show mostly noise until the last steps.

Nothing here touches the pipeline's tensors or random generators: the preview reads the
latents the step callback is handed and returns JPEG bytes, so a generation gives the same
image with the preview on or off. The sums run in NumPy (see `to_float32_array`); torch is
imported lazily, only to read the tensors.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# ComfyUI comfy/latent_formats.py, class SD3 (rows: the 16 latent channels; columns: R, G, B).
SD3_LATENT_RGB_FACTORS: tuple[tuple[float, float, float], ...] = (
    (-0.0922, -0.0175, 0.0749),
    (0.0311, 0.0633, 0.0954),
    (0.1994, 0.0927, 0.0458),
    (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496),
    (-0.0006, 0.1104, 0.0309),
    (0.0978, 0.0306, 0.0427),
    (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669),
    (-0.0488, 0.0130, -0.0268),
    (0.0922, 0.0988, 0.0951),
    (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895),
    (-0.0069, -0.0030, -0.0810),
    (-0.0596, -0.0465, -0.0293),
    (-0.1448, -0.1463, -0.1189),
)
SD3_LATENT_RGB_BIAS: tuple[float, float, float] = (0.2394, 0.2135, 0.1925)

# At most ~4 previews a second: a step slower than this gets a preview every time.
MIN_INTERVAL_SECONDS = 0.25
JPEG_QUALITY = 85


def to_float32_array(latents: Any) -> np.ndarray:
    """A latents tensor (1×C×h×w or C×h×w, any device) as a C×h×w float32 NumPy array.

    The small sums of the preview run in NumPy on the CPU rather than as torch ops: torch
    splits each op over its thread pool, and on a busy machine every such split waits for
    descheduled threads (measured here under load: 50 ms a preview in torch, against under
    1 ms quiet). bfloat16 has no NumPy type, so its bits are widened by hand: a bfloat16 is
    the top half of a float32, so the conversion is exact.
    """
    import torch

    x = latents.detach()
    x = x[0] if x.dim() == 4 else x
    if x.device.type != "cpu":
        x = x.to("cpu")  # 0.5–1 MB at 1024², at most a few times a second
    if x.dtype == torch.bfloat16:
        bits = x.contiguous().view(torch.int16).numpy().view(np.uint16)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return x.numpy().astype(np.float32, copy=False)


def latents_to_rgb(latents: np.ndarray) -> np.ndarray:
    """Project SD3 latents (C×h×w float32, model space) to an h×w×3 uint8 image.

    ComfyUI's `Latent2RGBPreviewer`: `latents · factors + bias` gives RGB in about −1…1,
    mapped to 0…255 as its `preview_to_image` does. `einsum` without `optimize` runs its own
    single-threaded loop; a matrix product would go to BLAS, whose threads stall the same way
    torch's do on a busy machine (measured: 0.4–24 ms a call under load).
    """
    factors = np.asarray(SD3_LATENT_RGB_FACTORS, dtype=np.float32)
    bias = np.asarray(SD3_LATENT_RGB_BIAS, dtype=np.float32)
    rgb = np.einsum("chw,cr->rhw", latents, factors, optimize=False) + bias[:, None, None]
    rgb = np.clip((rgb + 1.0) * 127.5, 0.0, 255.0).round().astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(rgb, 0, -1))


def rgb_to_jpeg(rgb: np.ndarray, *, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of an h×w×3 uint8 image (at latent size: 128 px for a 1024² image)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class CleanEstimate:
    """Estimate the clean latents x̂₀ at each step of a flow-matching Euler sampler.

    SD3 is a rectified-flow model: a noisy latent at noise level σ is
    x_σ = (1 − σ)·x₀ + σ·ε, and the transformer predicts the velocity v = ε − x₀, so
    x₀ = x_σ − σ·v. diffusers' `FlowMatchEulerDiscreteScheduler.step` moves
    x_{i+1} = x_i + (σ_{i+1} − σ_i)·v_i, with v_i the guided velocity of step i
    (classifier-free guidance already applied). The step callback is handed only x_{i+1},
    but two successive callbacks give x_i and x_{i+1}, and the scheduler's `sigmas` give
    σ_i and σ_{i+1}, so

        v_i  = (x_{i+1} − x_i) / (σ_{i+1} − σ_i)
        x̂₀  = x_{i+1} − σ_{i+1}·v_i            (= x_i − σ_i·v_i, the same point)

    This is exactly the model's own x₀ prediction at step i, with no extra model call. The
    second form is used because at the last step σ = 0, so the last estimate *is* the final
    latents, bit for bit. The first step has no previous latents (the initial noise is not
    handed to callbacks, and drawing it again would consume the generator), so it gives
    no estimate. Differences are taken in float32; with bf16 latents the rounding of x
    is amplified by σ_{i+1}/(σ_i − σ_{i+1}), which only blurs a preview.

    `scheduler.step_index` (already advanced when the callback runs) indexes σ of the
    latents the callback holds, so img2img-style offsets (`begin_index`) need no special
    case. A scheduler with `stochastic_sampling` re-noises each step, so the difference is
    no velocity; there the estimate is None (no preview) rather than a wrong picture.
    """

    def __init__(self) -> None:
        self._previous: Any = None  # x_i: the latents of the previous callback

    def update(self, scheduler: Any, latents: Any, *, want: bool = True) -> np.ndarray | None:
        """Record this step's latents; return x̂₀ (C×h×w float32) when `want` and one exists.

        Keeps a reference, not a copy: the scheduler makes a new tensor every step and
        never writes into the old one.
        """
        previous, self._previous = self._previous, latents
        if not want or previous is None:
            return None
        if getattr(getattr(scheduler, "config", None), "stochastic_sampling", False):
            return None
        index = getattr(scheduler, "step_index", None)
        sigmas = getattr(scheduler, "sigmas", None)
        if index is None or sigmas is None or not 1 <= index < len(sigmas):
            return None
        sigma_now = float(sigmas[index])
        sigma_before = float(sigmas[index - 1])
        if sigma_before == sigma_now:
            return None
        x_now = to_float32_array(latents)
        velocity = (x_now - to_float32_array(previous)) / np.float32(sigma_now - sigma_before)
        return x_now - np.float32(sigma_now) * velocity


class StepPreview:
    """Per image: turn step callbacks into preview JPEGs, at most one per `min_interval`.

    `update` is called from the pipeline's step callback with the step's latents; it returns
    JPEG bytes when a preview is due, else None. The interval is measured between previews,
    so a slow step (longer than the interval) gets a preview every step, and fast steps
    are sampled at about 1/min_interval per second. The last step always gets one: it is
    the finished image's latents.
    """

    def __init__(
        self,
        *,
        total_steps: int,
        min_interval: float = MIN_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total_steps = total_steps
        self.min_interval = min_interval
        self._clock = clock
        self._estimate = CleanEstimate()
        self._last: float | None = None
        self.count = 0  # previews made

    def update(self, scheduler: Any, step: int, latents: Any) -> bytes | None:
        """Return a preview JPEG for `step` (1-based) when one is due, else None."""
        now = self._clock()
        last = self._last
        due = step >= self.total_steps or last is None or now - last >= self.min_interval
        x0 = self._estimate.update(scheduler, latents, want=due)
        if x0 is None:
            return None
        jpeg = rgb_to_jpeg(latents_to_rgb(x0))
        self._last = self._clock()
        self.count += 1
        return jpeg
