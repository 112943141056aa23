"""Image-to-image and SLG cost on the tiny pipeline, side by side in one run (issue 18).

1. Image-to-image at strength s vs text-to-image at the same size and steps: the time ratio
   should be about s (int(steps × s) steps run, plus one VAE encode), e.g. 0.5 → ≤ 0.55×.
2. Text-to-image with SLG on vs off (diffusers' native SLG; layers [1] on the 2-layer demo
   transformer, the default start/stop 0.01–0.2): one extra batch-1 transformer call on the
   steps in range.

Runs alternate (txt2img, img2img at each s, SLG on) and each figure is the median of N, in
process CPU seconds (what this process computed: steadier than wall time on a machine shared
with other jobs) with wall seconds beside it.
The tiny transformer is cheap next to its VAE, so the default is 128 px and 50 steps, where
the steps dominate (the VAE encode/decode share is printed).

    .venv/bin/python -m bench.image_modes [--runs 5] [--steps 50] [--size 128]
"""

from __future__ import annotations

import argparse
import time

from bench.common import library_versions, machine_facts, median, spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--strengths", default="0.35,0.5,0.75")
    # One thread: idle OpenMP threads spin, and count as CPU time, when others share the CPU.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from core.demo import build_demo_pipeline
    from core.image_modes import prompt_embeddings, run_image_mode, steps_that_run
    from core.slg import SkipLayerGuidance

    print(machine_facts())
    print(library_versions("torch", "diffusers"), f"· torch threads {torch.get_num_threads()}")
    pipe = build_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    embeds = prompt_embeddings(
        pipe, prompt="a lighthouse", negative_prompt="blur", guidance_scale=4.5
    )
    size, steps = args.size, args.steps
    strengths = [float(s) for s in args.strengths.split(",")]
    slg = SkipLayerGuidance(layers=(1,))
    call = {
        **embeds,
        "guidance_scale": 4.5,
        "num_inference_steps": steps,
        "width": size,
        "height": size,
    }

    def timed(work) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        with torch.inference_mode():
            work()
        return time.process_time() - cpu, time.perf_counter() - wall

    def txt2img(**extra):
        generator = torch.Generator("cpu").manual_seed(1)
        return pipe(**call, **extra, generator=generator).images[0]

    def img2img(strength: float):
        return run_image_mode(
            pipe,
            mode="img2img",
            embeds=embeds,
            image=source,
            seed=1,
            steps=steps,
            guidance_scale=4.5,
            strength=strength,
        )

    def vae_round_trip():
        latents = pipe.vae.encode(pipe.image_processor.preprocess(source)).latent_dist.mode()
        return pipe.vae.decode(latents, return_dict=False)

    with torch.inference_mode():
        source = txt2img()  # warm-up, and the source image for img2img
    work = {"txt2img": txt2img, "slg": lambda: txt2img(**slg.pipeline_kwargs())}
    work.update({f"img2img {s:g}": (lambda s=s: img2img(s)) for s in strengths})
    work["vae"] = vae_round_trip
    cpu: dict[str, list[float]] = {row: [] for row in work}
    wall: dict[str, list[float]] = {row: [] for row in work}
    for _ in range(args.runs):
        for row, job in work.items():
            c, w = timed(job)
            cpu[row].append(c)
            wall[row].append(w)

    base, base_wall = median(cpu["txt2img"]), median(wall["txt2img"])
    print(f"\n{size}×{size}, {steps} steps, guidance 4.5, median of {args.runs}:")
    print(f"  {'':24} {'CPU s':>8} {'ratio':>7}   {'wall s':>8} {'ratio':>7}")

    def line(label: str, row: str, note: str = "") -> None:
        c, w = median(cpu[row]), median(wall[row])
        print(f"  {label:24} {c:8.3f} {c / base:6.3f}×   {w:8.3f} {w / base_wall:6.3f}×  {note}")

    line("txt2img", "txt2img", f"(wall {spread(wall['txt2img'])})")
    line("VAE encode + decode", "vae", "(part of every img2img)")
    for s in strengths:
        ran = steps_that_run(steps, s)
        line(f"img2img strength {s:g}", f"img2img {s:g}", f"steps run {ran}/{steps}")
    slg_steps = len(slg.step_indices(steps))
    line("txt2img + SLG", "slg", f"SLG on {slg_steps}/{steps} steps (+1 batch-1 call each)")


if __name__ == "__main__":
    main()
