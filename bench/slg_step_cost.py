"""SLG's cost on a full-size SD3.5 Medium transformer: one CFG step (batch 2) vs the extra
batch-1 call SLG adds on the steps in range (`skip_layers=[7, 8, 9]`).

Needs the random-weight stand-in (`../shared/tools/standin`, its `transformer/` folder, 4.94
GB in bf16; peak RSS ≈ 5.5 GB at 512²). Per image at 40 steps with diffusers' defaults
(start 0.01, stop 0.2), SLG runs on steps 1–7, so the image costs
1 + 7/40 × (extra / step) of the time without it (text encoding and VAE decode aside).

    .venv/bin/python -m bench.slg_step_cost STANDIN_DIR [--size 512] [--reps 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import library_versions, machine_facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("standin", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()

    import torch
    from diffusers import SD3Transformer2DModel

    from core.slg import SkipLayerGuidance

    print(machine_facts())
    print(library_versions("torch", "diffusers"), f"· torch threads {torch.get_num_threads()}")
    model = SD3Transformer2DModel.from_pretrained(
        args.standin / "transformer", torch_dtype=torch.bfloat16
    ).eval()
    latent = args.size // 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, latent, latent, generator=g).to(torch.bfloat16)
    context = torch.randn(2, 77 + 256, 4096, generator=g).to(torch.bfloat16)
    pooled = torch.randn(2, 2048, generator=g).to(torch.bfloat16)
    t = torch.tensor([500.0, 500.0])
    slg = SkipLayerGuidance()

    def step() -> None:
        model(
            hidden_states=x,
            encoder_hidden_states=context,
            pooled_projections=pooled,
            timestep=t,
            return_dict=False,
        )

    def extra() -> None:
        model(
            hidden_states=x[1:],
            encoder_hidden_states=context[1:],
            pooled_projections=pooled[1:],
            timestep=t[1:],
            return_dict=False,
            skip_layers=list(slg.layers),
        )

    times: dict[str, list[float]] = {"step": [], "extra": []}
    with torch.inference_mode():
        step()  # first call pages the weights in
        for _ in range(args.reps):
            for name, work in (("step", step), ("extra", extra)):
                start = time.perf_counter()
                work()
                times[name].append(time.perf_counter() - start)
    step_s, extra_s = min(times["step"]), min(times["extra"])
    in_range = len(slg.step_indices(args.steps))
    per_image = 1 + in_range / args.steps * extra_s / step_s
    print(
        f"\n{args.size}², bf16, min of {args.reps}: CFG step (batch 2) {step_s:.2f} s; "
        f"SLG extra call (batch 1, layers {list(slg.layers)} skipped) {extra_s:.2f} s"
    )
    print(
        f"  a step SLG runs on: {(step_s + extra_s) / step_s:.3f}× the time; SLG on "
        f"{in_range}/{args.steps} steps → denoising {per_image:.3f}× per image"
    )


if __name__ == "__main__":
    main()
