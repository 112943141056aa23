"""CPU dtype: float32 vs bfloat16 vs float16 for an SD3 transformer forward on this CPU.

A mid-size `SD3Transformer2DModel` (6 layers, 12 heads × 64, random weights) at a real
working size (512², batch 2 as with guidance, 154 text tokens): float32 vs bfloat16,
alternating, median of N. float16 is hundreds of times slower on CPU, so it gets one forward
of the same model at a small input (128², batch 1, 16 text tokens), next to float32 and
bfloat16 on that input, in a child process with a time limit. Confirms the CPU default
(`SD_DTYPE=auto`: bfloat16 where the CPU has native bf16, else float32; never float16).
`--fp16-big` also times float16 at the working size (for CPUs with native fp16, such as
Xeons with AVX512-FP16, where it is not slow). `--demo` adds the tiny demo pipeline end to end.

    .venv/bin/python -m bench.cpu_dtype [--runs 5] [--fp16-limit 600] [--fp16-big] [--demo]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.common import library_versions, machine_facts, median, spread

DTYPES = ("float32", "bfloat16", "float16")
MID_SIZE = dict(
    sample_size=64,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=6,
    attention_head_dim=64,
    num_attention_heads=12,
    joint_attention_dim=1024,
    caption_projection_dim=768,
    pooled_projection_dim=768,
    pos_embed_max_size=96,
)
BIG_INPUT = dict(size=512, batch=2, text_tokens=154)
SMALL_INPUT = dict(size=128, batch=1, text_tokens=16)


def build_model():
    import torch
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(**MID_SIZE).eval()


def make_inputs(*, size: int, batch: int, text_tokens: int, dtype):
    import torch

    generator = torch.Generator().manual_seed(1)
    latent = size // 8
    return dict(
        hidden_states=torch.randn(batch, 16, latent, latent, generator=generator).to(dtype),
        encoder_hidden_states=torch.randn(
            batch, text_tokens, MID_SIZE["joint_attention_dim"], generator=generator
        ).to(dtype),
        pooled_projections=torch.randn(
            batch, MID_SIZE["pooled_projection_dim"], generator=generator
        ).to(dtype),
        timestep=torch.full((batch,), 500.0).to(dtype),
    )


def forward_seconds(model, inputs) -> float:
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        model(**inputs, return_dict=False)
    return time.perf_counter() - start


def _child(dtype_name: str) -> None:
    """One forward per dtype at the small input (the slow one last); print JSON seconds."""
    import torch

    out = {}
    for name in ("float32", "bfloat16", dtype_name):
        dtype = getattr(torch, name)
        model = build_model().to(dtype)
        inputs = make_inputs(**SMALL_INPUT, dtype=dtype)
        if name != "float16":
            forward_seconds(model, inputs)  # warm-up; float16 is too slow for one
        out[name] = forward_seconds(model, inputs)
    print(json.dumps(out))


def demo_pipeline_rows(runs: int) -> list[str]:
    from core.generation import GenerationRequest
    from core.local import load_pipeline, run_pipeline

    request = GenerationRequest(
        prompt="a red fox", seed=7, width=512, height=512, num_inference_steps=2
    )
    pipes = {
        name: load_pipeline(model="demo", device="cpu", dtype=name).pipe for name in DTYPES[:2]
    }
    times: dict[str, list[float]] = {name: [] for name in pipes}
    for pipe in pipes.values():
        run_pipeline(pipe, request)  # warm-up
    for _ in range(runs):
        for name, pipe in pipes.items():
            start = time.perf_counter()
            run_pipeline(pipe, request)
            times[name].append(time.perf_counter() - start)
    ratio = median(times["bfloat16"]) / median(times["float32"])
    return [
        f"| demo pipeline, 512², 2 steps, whole generation | {spread(times['float32'])} | "
        f"{spread(times['bfloat16'])} ({ratio:.2f}× fp32) | not run |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fp16-limit", type=int, default=600, help="seconds for the fp16 child")
    parser.add_argument("--demo", action="store_true", help="also time the demo pipeline")
    parser.add_argument("--fp16-big", action="store_true", help="float16 at the working size too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return

    import torch

    from core.device import choose_device, cpu_has_native_bf16

    print(machine_facts())
    print(library_versions("torch", "diffusers"), f"· torch threads {torch.get_num_threads()}")
    choice = choose_device("cpu", "auto")
    print(f"native bf16: {cpu_has_native_bf16()} · SD_DTYPE=auto picks {choice.dtype}")

    params = sum(p.numel() for p in build_model().parameters()) / 1e6
    big_dtypes = DTYPES if args.fp16_big else DTYPES[:2]
    models = {name: build_model().to(getattr(torch, name)) for name in big_dtypes}
    inputs = {name: make_inputs(**BIG_INPUT, dtype=getattr(torch, name)) for name in models}
    for name in models:
        forward_seconds(models[name], inputs[name])  # warm-up
    big: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.runs):
        for name in models:
            big[name].append(forward_seconds(models[name], inputs[name]))

    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.cpu_dtype", "--child", "float16"],
            capture_output=True,
            text=True,
            timeout=args.fp16_limit,
            check=True,
        )
        small = json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        small = None

    ratio = median(big["bfloat16"]) / median(big["float32"])
    print()
    print(
        f"SD3Transformer2DModel, {params:.0f} M parameters ({MID_SIZE['num_layers']} layers, "
        f"{MID_SIZE['num_attention_heads']}×{MID_SIZE['attention_head_dim']}), one forward:"
    )
    print("| input | float32 | bfloat16 | float16 |")
    print("| --- | --- | --- | --- |")
    fp16_big = "not run (see below)"
    if "float16" in big:
        fp16_ratio = median(big["float16"]) / median(big["float32"])
        fp16_big = f"{spread(big['float16'])} ({fp16_ratio:.2f}× fp32)"
    print(
        f"| {BIG_INPUT['size']}², batch {BIG_INPUT['batch']}, {BIG_INPUT['text_tokens']} text "
        f"tokens, median of {args.runs} | {spread(big['float32'])} | {spread(big['bfloat16'])} "
        f"({ratio:.2f}× fp32) | {fp16_big} |"
    )
    label = (
        f"| {SMALL_INPUT['size']}², batch {SMALL_INPUT['batch']}, {SMALL_INPUT['text_tokens']} "
        "text tokens, one forward |"
    )
    if small is None:
        print(f"{label} – | – | over {args.fp16_limit} s |")
    else:
        fp16 = small["float16"] / small["float32"]
        print(
            f"{label} {small['float32']:.3f} s | {small['bfloat16']:.3f} s | "
            f"{small['float16']:.1f} s ({fp16:.2f}× fp32) |"
        )
    if args.demo:
        for row in demo_pipeline_rows(args.runs):
            print(row)


if __name__ == "__main__":
    main()
