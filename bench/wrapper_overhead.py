"""Wrapper overhead: the app's generation path vs the same diffusers pipeline called directly.

One tiny demo pipeline (loaded the app's way, float32 on CPU), the same request, alternating
raw / `run_pipeline` / `LocalBackend.generate` (with a progress callback, as the page does),
median of N each. Also checks that all three give the same pixels. Target: app / raw ≤ 1.03×.

    .venv/bin/python -m bench.wrapper_overhead [--runs 7] [--steps 20] [--size 512]
"""

from __future__ import annotations

import argparse
import time

from bench.common import library_versions, machine_facts, median, spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    import numpy as np
    import torch

    from core.generation import GenerationRequest
    from core.local import LocalBackend, load_pipeline, run_pipeline

    print(machine_facts())
    print(library_versions("torch", "diffusers"), f"· torch threads {torch.get_num_threads()}")
    loaded = load_pipeline(model="demo", device="cpu", dtype=args.dtype)
    pipe = loaded.pipe
    backend = LocalBackend(model="demo", device="cpu", dtype=args.dtype, loader=lambda **_: loaded)
    backend.ensure_loaded()
    request = GenerationRequest(
        prompt="a lighthouse on a cliff at dusk",
        negative_prompt="blurry",
        seed=1234,
        width=args.size,
        height=args.size,
        num_inference_steps=args.steps,
        guidance_scale=4.5,
    )

    def raw():
        # What a diffusers user writes: the pipeline call with a seeded CPU generator.
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        return pipe(**request.pipeline_kwargs(), generator=generator).images[0]

    def wrapped():
        return run_pipeline(pipe, request)[0][0]

    def app():
        return backend.generate(request, on_progress=lambda p: None).images[0]

    paths = {
        "raw diffusers call": raw,
        "core.local.run_pipeline": wrapped,
        "LocalBackend.generate": app,
    }
    images = {name: fn() for name, fn in paths.items()}  # warm-up, and the pixel check
    reference = np.asarray(images["raw diffusers call"])
    same = all(np.array_equal(reference, np.asarray(img)) for img in images.values())

    times: dict[str, list[float]] = {name: [] for name in paths}
    for run in range(args.runs):
        order = list(paths.items())
        for name, fn in order if run % 2 == 0 else reversed(order):  # no position bias
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

    raw_median = median(times["raw diffusers call"])
    print()
    print(
        f"| path | {args.size}², {args.steps} steps, {args.dtype}, median of {args.runs} "
        "(min–max) | ratio |"
    )
    print("| --- | --- | --- |")
    for name, values in times.items():
        print(f"| {name} | {spread(values)} | {median(values) / raw_median:.3f}× |")
    print(f"identical pixels on all paths: {same}")
    ratio = median(times["LocalBackend.generate"]) / raw_median
    # On a shared machine the fastest run of each path is the least disturbed one.
    best = min(times["LocalBackend.generate"]) / min(times["raw diffusers call"])
    print(f"ratio app / raw: median {ratio:.3f}×, fastest {best:.3f}× (target ≤ 1.03×)")


if __name__ == "__main__":
    main()
