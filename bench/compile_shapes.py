"""Which images recompile the compiled transformer blocks, and what the label says (issue 20).

The tiny pipeline's blocks compiled as the app compiles them (`core.compile.compile_blocks`,
inductor on this CPU), then images of several sizes and guidance on/off, in order. For each:
the wall seconds, the new graphs dynamo made (`unique_graphs`), and the words the page shows
before its first step (`FirstImage.compiles`). The label is right where it is said exactly
for the images that made new graphs.

    .venv/bin/python -m bench.compile_shapes
"""

from __future__ import annotations

import time

from bench.common import library_versions, machine_facts

CASES = (  # (width, height, guidance): the order matters, as it would in a session
    (512, 512, 4.5),
    (512, 512, 4.5),
    (768, 512, 4.5),
    (512, 768, 4.5),
    (1024, 1024, 4.5),
    (512, 512, 0.0),
    (640, 640, 0.0),
)


def main() -> None:
    import torch
    from torch._dynamo.utils import counters

    from core.compile import FirstImage, compile_blocks
    from core.demo import build_demo_pipeline
    from core.generation import GenerationRequest
    from core.local import run_pipeline
    from core.seed_loop import compile_shapes

    print(machine_facts())
    print(library_versions("torch", "diffusers"), f"· torch threads {torch.get_num_threads()}")
    pipe = build_demo_pipeline().to(dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    compile_blocks(pipe.transformer)
    state = FirstImage(compiled=True)
    print(f"{'image':>16} {'seconds':>8} {'new graphs':>10}  label")
    right = 0
    for width, height, guidance in CASES:
        request = GenerationRequest(prompt="a lighthouse", seed=5, width=width, height=height,
                                    num_inference_steps=2, guidance_scale=guidance)  # fmt: skip
        said = state.compiles(compile_shapes(request))
        graphs = counters["stats"]["unique_graphs"]
        start = time.perf_counter()
        run_pipeline(pipe, request, first_image=state)
        seconds = time.perf_counter() - start
        new = counters["stats"]["unique_graphs"] - graphs
        right += (said is not None) == (new > 0)
        name = f"{width}×{height} g{guidance:g}"
        print(f"{name:>16} {seconds:8.1f} {new:10d}  {said or '-'}")
    print(f"label right for {right} of {len(CASES)} images")


if __name__ == "__main__":
    main()
