"""Skip Layer Guidance (SLG) for every SD3 mode, not only text-to-image.

diffusers 0.42's `StableDiffusion3Pipeline` has SLG (`skip_guidance_layers`,
`skip_layer_guidance_scale`, `_start`, `_stop`); its image-to-image and inpaint pipelines do
not. On the steps in range, text-to-image runs the transformer once more on the conditional
half with `skip_layers=` and sets

    noise = u + g·(c − u) + s·(c − c_skip)                                            (1)

(u, c: the unconditional and conditional predictions; g: guidance scale; s: SLG scale;
c_skip: the conditional prediction with the layers skipped). A step i of n runs it when
`n·start < i < n·stop`, only with guidance on (g > 1, where CFG runs at all).

For the other modes, `SkipLayerGuidedTransformer` adds it to one call instead of copying
diffusers' denoising loop. It stands in for the transformer: it returns the batch [u, c]
unchanged, and on the steps in range also runs the conditional half with `skip_layers=` and
keeps d = c − c_skip. The pipeline forms its CFG prediction u + g·(c − u) as always and hands
it to `scheduler.step`, which the same object wraps (`wrap_step`, on the call's own fresh
scheduler) to add d·s first:

    (u + g·(c − u)) + (c − c_skip)·s                                                   (1')

the very tensor operations of (1), in the same order and dtype, so the image equals
diffusers' native SLG bit for bit (tested on text-to-image, float32 and bfloat16).

The simpler algebraic route, returning c' = c + (s / g)·(c − c_skip) so that
u + g·(c' − u) = (1) in real numbers, was measured and dropped: in bfloat16 the rounding of
c' is multiplied by g (4.5) at every step; on the tiny pipeline the image differed from
native SLG by up to 11 levels of 255 in bfloat16 (1 level in float32).

The step index is counted per call over the steps that really run, which is what diffusers'
own loop does: there `i` and `num_inference_steps` count only the steps left after
`strength` (n = `core.image_modes.steps_that_run`). Guidance must be on (g > 1): without CFG
there is no [u, c] batch, and diffusers' text-to-image skips SLG then too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

INFOTEXT_KEY = "Skip layer guidance"  # one clearly named key in the A1111 `parameters`
OFF = "off"  # the mode option's value when SLG is off (then nothing is written)
EXAMPLE = "layers 7 8 9; scale 2.8; start 0.01; stop 0.2"
SLG_HELP = (
    "Guidance from the model run again with some layers skipped, on a window of the steps "
    "(SD3.5 Medium's card recommends it for structure and anatomy). Runs only with guidance "
    "on; it costs one extra half-step on each step of its window."
)


class SLGError(ValueError):
    """SLG values out of range; the message names the valid range."""


@dataclass(frozen=True, kw_only=True)
class SkipLayerGuidance:
    """SLG settings. Defaults: diffusers' (and the SD3.5 Medium card's layers 7, 8, 9)."""

    layers: tuple[int, ...] = (7, 8, 9)
    scale: float = 2.8
    start: float = 0.01
    stop: float = 0.2

    def __post_init__(self) -> None:
        layers = self.layers
        if (
            not isinstance(layers, tuple)
            or not layers
            or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in layers)
            or len(set(layers)) != len(layers)
        ):
            raise SLGError("SLG layers must be distinct whole numbers ≥ 0, e.g. 7, 8, 9.")
        for name, value, low, high in (
            ("scale", self.scale, 0.0, 10.0),
            ("start", self.start, 0.0, 1.0),
            ("stop", self.stop, 0.0, 1.0),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SLGError(f"SLG {name} must be a number in {low:g}–{high:g}.")
            if not math.isfinite(value) or not low <= value <= high:
                raise SLGError(f"SLG {name} must be in {low:g}–{high:g}; got {value!r}.")
        if self.start >= self.stop:
            raise SLGError(
                f"SLG start ({self.start:g}) must be below stop ({self.stop:g}): it runs on "
                "the steps between the two fractions."
            )

    def check_layers(self, num_layers: int) -> None:
        """Refuse layers the transformer does not have (diffusers skips nothing silently)."""
        missing = [x for x in self.layers if x >= num_layers]
        if missing:
            raise SLGError(
                f"This model's transformer has {num_layers} layers (0–{num_layers - 1}); SLG "
                f"layer(s) {', '.join(map(str, missing))} do not exist. SD3.5 Medium's are 7, "
                "8, 9."
            )

    def step_indices(self, steps_run: int) -> tuple[int, ...]:
        """Indices (0-based, over the steps that run) where SLG runs, as diffusers decides."""
        return tuple(
            i for i in range(steps_run) if steps_run * self.start < i < steps_run * self.stop
        )

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Arguments of `StableDiffusion3Pipeline.__call__` (text-to-image's native SLG)."""
        return {
            "skip_guidance_layers": list(self.layers),
            "skip_layer_guidance_scale": float(self.scale),
            "skip_layer_guidance_start": float(self.start),
            "skip_layer_guidance_stop": float(self.stop),
        }

    def infotext(self) -> str:
        """The value under `INFOTEXT_KEY`: no `,` or `:`, so A1111 writes it unquoted."""
        layers = " ".join(map(str, self.layers))
        return f"layers {layers}; scale {self.scale:g}; start {self.start:g}; stop {self.stop:g}"

    @classmethod
    def from_infotext(cls, text: str) -> SkipLayerGuidance:
        """Read `infotext()` back; raise `SLGError` for anything else (bounded: 200 chars)."""
        fields: dict[str, str] = {}
        for part in str(text)[:200].split(";"):
            name, _, value = part.strip().partition(" ")
            fields[name] = value.strip()
        try:
            return cls(
                layers=tuple(int(x) for x in fields["layers"].split()),
                scale=float(fields["scale"]),
                start=float(fields["start"]),
                stop=float(fields["stop"]),
            )
        except (KeyError, ValueError) as exc:
            raise SLGError(f"Unreadable {INFOTEXT_KEY} value ({exc}).") from None


def parse_option(text: str) -> tuple[str | None, str | None]:
    """The `slg` mode option from text: (its one written form, None) or (None, why not).

    "off" (or nothing) is off; anything else must read as `infotext()` does, e.g.
    "layers 7 8 9; scale 2.8; start 0.01; stop 0.2" (a share link, a form, an infotext).
    """
    words = str(text).strip()
    if words.lower() in (OFF, ""):
        return OFF, None
    try:
        return SkipLayerGuidance.from_infotext(words).infotext(), None
    except SLGError as exc:
        return None, f"Skip layer guidance must be off or like {EXAMPLE!r}: {exc}"


REMOTE_NOTE = (
    "Skip layer guidance runs on the local pipeline only (SD_BACKEND=local): a remote service "
    "takes its task's settings, so it is off here."
)


def from_option(value: object) -> SkipLayerGuidance | None:
    """The SLG settings of a validated `slg` option (None: off)."""
    if not isinstance(value, str) or value == OFF:
        return None
    return SkipLayerGuidance.from_infotext(value)


def slg_runs(slg: SkipLayerGuidance | None, guidance_scale: float) -> bool:
    """Whether SLG takes part: it is on and guidance is on (g > 1, as in diffusers)."""
    return slg is not None and guidance_scale > 1


class SkipLayerGuidedTransformer:
    """SLG for one image-to-image or inpaint call: the transformer stand-in, and
    `wrap_step` for the call's scheduler (see the module docstring, formula (1')).

    `core.image_modes.mode_pipeline(..., guide=this)` hands both to the mode's pipeline;
    the shared transformer and the loaded pipeline's scheduler are never changed.
    `slg_steps` counts the steps it ran on.
    """

    def __init__(
        self,
        transformer: Any,
        slg: SkipLayerGuidance,
        *,
        guidance_scale: float,
        steps_run: int,
    ) -> None:
        if not guidance_scale > 1:
            raise SLGError("SLG runs only with guidance on (guidance scale above 1).")
        slg.check_layers(int(transformer.config.num_layers))
        self.transformer = transformer
        self.slg = slg
        self.run_on = frozenset(slg.step_indices(steps_run))
        self.step = 0
        self.slg_steps = 0
        self._pending: Any = None  # c − c_skip of the current step, until the scheduler steps

    # What the SD3 pipelines read of their transformer besides calling it.
    @property
    def config(self) -> Any:
        return self.transformer.config

    @property
    def dtype(self) -> Any:
        return self.transformer.dtype

    @property
    def device(self) -> Any:
        return self.transformer.device

    def __call__(
        self,
        *,
        hidden_states: Any,
        timestep: Any,
        encoder_hidden_states: Any,
        pooled_projections: Any,
        joint_attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        out = self.transformer(
            hidden_states=hidden_states,
            timestep=timestep,
            encoder_hidden_states=encoder_hidden_states,
            pooled_projections=pooled_projections,
            joint_attention_kwargs=joint_attention_kwargs,
            return_dict=return_dict,
            **kwargs,
        )
        step, self.step = self.step, self.step + 1
        if step in self.run_on:
            if hidden_states.shape[0] % 2:
                raise SLGError("SLG needs the pipeline's CFG batch (guidance scale above 1).")
            cond = (out.sample if return_dict else out[0]).chunk(2)[1]
            # The conditional half of every input: diffusers orders CFG batches [uncond, cond].
            skipped = self.transformer(
                hidden_states=hidden_states.chunk(2)[1],
                timestep=timestep.chunk(2)[1],
                encoder_hidden_states=encoder_hidden_states.chunk(2)[1],
                pooled_projections=pooled_projections.chunk(2)[1],
                joint_attention_kwargs=joint_attention_kwargs,
                return_dict=False,
                skip_layers=list(self.slg.layers),
                **kwargs,
            )[0]
            self._pending = cond - skipped
            self.slg_steps += 1
        return out

    def wrap_step(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """`step` (the call's scheduler's) with s·(c − c_skip) added to the CFG prediction
        on the steps SLG runs on, exactly as diffusers' text-to-image adds it."""

        def guided_step(model_output: Any, *args: Any, **kwargs: Any) -> Any:
            pending, self._pending = self._pending, None
            if pending is not None:
                model_output = model_output + pending * self.slg.scale
            return step(model_output, *args, **kwargs)

        return guided_step
