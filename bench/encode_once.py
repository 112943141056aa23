"""Batch of 4 at 512²: one pipeline call per seed with the prompt (before) vs encode once (after).

- before: today's path until issue 13, `pipe(prompt=…, generator=…)` once per seed, which
  runs the three text encoders four times;
- after: `core.local.run_pipeline`, which encodes once and passes `prompt_embeds`;
- after, cached: the same with the embedding cache already holding the prompt (the next
  click on the same prompt).

Rounds alternate (B A C, A C B, …) on the tiny demo pipeline; images must be identical.
The tiny text encoders cost almost nothing, so the saving here is small; on SD3.5 the
repeated T5-XXL pass is what it removes (~16–19 s per encode on a 2-core CPU, measured on
the full-size stand-in).

    .venv/bin/python -m bench.encode_once [--steps 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import library_versions, machine_facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch

    from core.demo import build_demo_pipeline
    from core.generation import GenerationRequest
    from core.local import run_pipeline
    from core.prompt_cache import PromptCache

    print(machine_facts())
    print(library_versions("torch", "diffusers"), f"· torch threads {torch.get_num_threads()}")
    pipe = build_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    request = GenerationRequest(
        prompt="a lighthouse on a cliff at dusk, volumetric fog, oil painting",
        negative_prompt="blurry",
        seed=10,
        width=512,
        height=512,
        num_inference_steps=args.steps,
        num_images=4,
    )

    def before():
        images = []
        for seed in request.seeds:
            generator = torch.Generator(device="cpu").manual_seed(seed)
            with torch.inference_mode():
                images.append(pipe(**request.pipeline_kwargs(), generator=generator).images[0])
        return images

    def after():
        return run_pipeline(pipe, request)[0]

    cache = PromptCache()
    run_pipeline(pipe, request, cache=cache)  # fills the cache

    def cached():
        return run_pipeline(pipe, request, cache=cache)[0]

    runs = {"before": before, "after": after, "after, cached": cached}
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    reference = [image.tobytes() for image in before()]
    for r in range(args.rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            start = time.perf_counter()
            images = runs[name]()
            times[name].append(time.perf_counter() - start)
            assert [image.tobytes() for image in images] == reference, f"{name}: pixels differ"
    base = min(times["before"])
    print(f"batch of 4 at 512², {args.steps} steps, CFG on; identical pixels in every run")
    print("  (best of the rounds: a busy shared machine only ever adds time)")
    for name in names:
        best, median = min(times[name]), statistics.median(times[name])
        print(
            f"  {name:14s} best {best:6.3f} s · median {median:6.3f} s · "
            f"{base / best:.2f}× vs before (best)"
        )


if __name__ == "__main__":
    main()
