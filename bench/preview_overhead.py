"""Per-step cost of the live preview: 1024², 40 steps, preview on vs off, side by side.

    .venv/bin/python -m bench.preview_overhead [--rounds 3] [--blocks 2,24] [--steps 40]

For each transformer depth, runs alternate off/on (`rounds` of each) through the app's own
`run_pipeline`, so load noise on a shared machine hits both sides alike. Per-step time is
taken between the first and the last step callbacks (text encoding and VAE decode left
out); the ratio is the median on-run per-step time over the median off-run one. The time
spent inside the preview itself (x0 estimate, projection, JPEG) is also measured directly,
which load noise hardly touches: its share of the step time is the overhead to expect.

Depths: the demo pipeline's 2 blocks, and SD3.5 Medium's 24 blocks at the demo's width
(the full-width transformer, 1536 channels and ~2.5 B parameters, needs ~5 GB in bf16 and
does not fit the ~3 GB this shared machine allows a benchmark; left out).
"""

from __future__ import annotations

import argparse
import time

from bench.common import library_versions, machine_facts, median

SIZE = 1024
STEPS = 40


def _pipeline(blocks: int, dtype: str):
    """The demo pipeline, its transformer rebuilt with `blocks` blocks (same seeded init)."""
    import torch
    from diffusers import SD3Transformer2DModel

    from core.local import load_pipeline

    loaded = load_pipeline(model="demo", device="cpu", dtype=dtype)
    pipe = loaded.pipe
    if blocks != pipe.transformer.config.num_layers:
        config = dict(pipe.transformer.config)
        config["num_layers"] = blocks
        torch.manual_seed(0)
        transformer = SD3Transformer2DModel.from_config(config).eval()
        transformer.to(dtype=pipe.transformer.dtype)
        pipe = type(pipe)(**{**pipe.components, "transformer": transformer})
        pipe.set_progress_bar_config(disable=True)
    return pipe, loaded.choice.dtype


def _run(pipe, request, *, preview: bool) -> dict[str, float]:
    from core import preview as preview_module
    from core.local import run_pipeline

    stamps: list[float] = []
    inside = [0.0, 0]  # seconds in StepPreview.update, previews made
    original = preview_module.StepPreview.update

    def timed(self, scheduler, step, latents):
        start = time.perf_counter()
        jpeg = original(self, scheduler, step, latents)
        inside[0] += time.perf_counter() - start
        inside[1] += jpeg is not None
        return jpeg

    preview_module.StepPreview.update = timed
    try:
        images, _ = run_pipeline(
            pipe, request, on_progress=lambda p: stamps.append(time.perf_counter()), preview=preview
        )
    finally:
        preview_module.StepPreview.update = original
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return {
        "per_step": per_step,
        "preview_per_step": inside[0] / len(stamps),
        "previews": inside[1],
        "pixels": images[0].tobytes(),
    }


def bench(blocks: int, *, rounds: int, dtype: str, steps: int = STEPS) -> None:
    from core.generation import GenerationRequest

    pipe, used_dtype = _pipeline(blocks, dtype)
    request = GenerationRequest(
        prompt="a lighthouse", seed=1, width=SIZE, height=SIZE, num_inference_steps=steps
    )
    _run(
        pipe,
        GenerationRequest(prompt="warm-up", seed=1, width=512, height=512, num_inference_steps=2),
        preview=True,
    )
    off, on = [], []
    for _ in range(rounds):
        off.append(_run(pipe, request, preview=False))
        on.append(_run(pipe, request, preview=True))
    identical = all(r["pixels"] == off[0]["pixels"] for r in off + on)
    off_step = median([r["per_step"] for r in off])
    on_step = median([r["per_step"] for r in on])
    inside = median([r["preview_per_step"] for r in on])
    print(
        f"| {blocks} blocks · {used_dtype} | {_spread(off)} | {_spread(on)} "
        f"| {on_step / off_step:.3f}× | {inside * 1000:.2f} ms ({inside / off_step:.2%}) "
        f"| {median([r['previews'] for r in on]):.0f}/{steps} | {'yes' if identical else 'NO'} |",
        flush=True,
    )


def _spread(runs: list[dict[str, float]]) -> str:
    steps = [r["per_step"] * 1000 for r in runs]
    return f"{median(steps):.0f} ms ({min(steps):.0f}–{max(steps):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side per depth")
    parser.add_argument("--blocks", default="2,24", help="transformer depths, comma-separated")
    parser.add_argument("--dtype", default="auto", help="as SD_DTYPE (auto: the app's choice)")
    parser.add_argument(
        "--steps", type=int, default=STEPS, help="fewer for deep transformers on a slow CPU"
    )
    args = parser.parse_args()
    print(machine_facts())
    print(library_versions("torch", "diffusers", "streamlit"))
    print(f"{SIZE}×{SIZE}, {args.steps} steps, {args.rounds} run(s) of each side, alternating\n")
    print(
        "| transformer | per step, preview off: median (min–max) | preview on | on / off "
        "| inside the preview, per step (share of a step) | previews | same pixels |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for blocks in (int(b) for b in args.blocks.split(",")):
        bench(blocks, rounds=args.rounds, dtype=args.dtype, steps=args.steps)


if __name__ == "__main__":
    main()
