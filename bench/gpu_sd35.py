"""GPU: seconds per SD3.5 Medium image, raw diffusers vs the app's path vs the app + torch.compile.

Builds the full-size SD3.5 Medium architecture from its config with random weights (no
download): MMDiT transformer (24 layers, 24 heads × 64, dual attention in layers 0–12, RMS
QK-norm), the 16-channel VAE, CLIP-L, CLIP-G and T5-XXL encoders; the demo's tokenizers
stand in for the real ones. 1024², 40 steps, guidance 4.5, bfloat16, one image per call.
Raw and app alternate (median of N each), then the transformer is compiled and the app
path is timed again. Time per image is the whole pipeline call: text encoders, 40 CFG steps
and the VAE decode. Physical bound ≈ 1.16 s on an H200 (22.5 TFLOP per CFG step × 40 at
~790 TFLOP/s).

Runs only where CUDA is present; elsewhere it prints a skip message and exits 0.
`--smoke` runs the same code on CPU with a tiny config and 2 steps, to check the plumbing.

    python -m bench.gpu_sd35 [--runs 3] [--steps 40] [--no-compile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench.common import SD35_VAE, library_versions, machine_facts

SD35_MEDIUM_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)),
    qk_norm="rms_norm",
)
CLIP_L = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    projection_dim=768,
    hidden_act="quick_gelu",
)
CLIP_G = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    projection_dim=1280,
    hidden_act="gelu",
)
T5_XXL = dict(
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    feed_forward_proj="gated-gelu",
)
# --smoke: the same shape rules at toy sizes (see NOTES-sd3.md).
SMOKE_TRANSFORMER = dict(
    SD35_MEDIUM_TRANSFORMER,
    num_layers=2,
    num_attention_heads=2,
    attention_head_dim=16,
    caption_projection_dim=32,
    joint_attention_dim=64,
    pooled_projection_dim=32,
    pos_embed_max_size=96,
    dual_attention_layers=(0,),
)
SMOKE_VAE = dict(SD35_VAE, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)
SMOKE_CLIP = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
    projection_dim=16, hidden_act="gelu",
)  # fmt: skip
SMOKE_T5 = dict(T5_XXL, d_model=64, d_kv=8, d_ff=64, num_layers=1, num_heads=2)


def build_pipeline(*, device: str, smoke: bool):
    """The SD3.5 Medium pipeline with random weights, built on `device` in bfloat16."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from core.demo import _clip_tokenizer, _t5_tokenizer

    torch.manual_seed(0)
    clip_l, clip_g = (SMOKE_CLIP, SMOKE_CLIP) if smoke else (CLIP_L, CLIP_G)
    clip_common = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=1)
    # Building on the device and in bf16 keeps the ~8 B random parameters quick to initialise.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            parts = dict(
                transformer=SD3Transformer2DModel(
                    **(SMOKE_TRANSFORMER if smoke else SD35_MEDIUM_TRANSFORMER)
                ),
                vae=AutoencoderKL(**(SMOKE_VAE if smoke else SD35_VAE)),
                text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**clip_l, **clip_common)),
                text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**clip_g, **clip_common)),
                text_encoder_3=T5EncoderModel(T5Config(**(SMOKE_T5 if smoke else T5_XXL))),
            )
    finally:
        torch.set_default_dtype(previous)
    for model in parts.values():
        model.eval()
    pipe = StableDiffusion3Pipeline(
        **parts,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        tokenizer=_clip_tokenizer(),
        tokenizer_2=_clip_tokenizer(),
        tokenizer_3=_t5_tokenizer(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny config on CPU, 2 steps")
    args = parser.parse_args()

    import torch

    if args.smoke:
        device, args.steps, args.size, args.runs = "cpu", 2, 512, 1
    elif torch.cuda.is_available():
        device = "cuda"
    else:
        print("gpu_sd35: skipped — no CUDA device here (torch.cuda.is_available() is False)")
        return

    from core.device import DeviceChoice
    from core.generation import GenerationRequest
    from core.local import LoadedPipeline, LocalBackend, apply_memory_options

    print(machine_facts())
    print(library_versions("torch", "diffusers", "transformers"))
    if device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()} · CUDA {torch.version.cuda}")
    start = time.perf_counter()
    pipe = build_pipeline(device=device, smoke=args.smoke)
    print(f"built the random-weight pipeline in {time.perf_counter() - start:.1f} s")

    request = GenerationRequest(
        prompt="a lighthouse on a cliff at dusk, volumetric fog, oil painting",
        negative_prompt="blurry",
        seed=1234,
        width=args.size,
        height=args.size,
        num_inference_steps=args.steps,
        guidance_scale=4.5,
    )
    choice = DeviceChoice(device, "bfloat16", "bench", "bench")
    loaded = LoadedPipeline(pipe=pipe, model="sd35-medium-random", choice=choice, load_seconds=0)
    backend = LocalBackend(
        model=loaded.model, device=device, dtype="bfloat16", loader=lambda **_: loaded
    )

    def raw() -> None:
        # diffusers' defaults: no VAE slicing or tiling, a seeded CPU generator.
        pipe.vae.disable_slicing()
        pipe.vae.disable_tiling()
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        pipe(**request.pipeline_kwargs(), generator=generator)

    def app() -> None:
        apply_memory_options(pipe)  # what load_pipeline does to every pipeline it loads
        backend.generate(request, on_progress=lambda p: None)

    def timed(fn) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - began

    results: dict[str, list[float]] = {"raw diffusers": [], "app (LocalBackend.generate)": []}
    timed(raw), timed(app)  # warm-up: kernels, allocator
    for _ in range(args.runs):
        results["raw diffusers"].append(timed(raw))
        results["app (LocalBackend.generate)"].append(timed(app))

    if not args.no_compile:
        pipe.transformer.compile()
        compile_seconds = timed(app)  # the first call compiles
        print(f"first call with torch.compile (compiling): {compile_seconds:.1f} s")
        results["app + torch.compile"] = [timed(app) for _ in range(args.runs)]

    if device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    raw_median = statistics.median(results["raw diffusers"])
    print()
    print(f"| path | s / image, {args.size}², {args.steps} steps, bf16, median of {args.runs} "
          "(min–max) | vs raw |")  # fmt: skip
    print("| --- | --- | --- |")
    for name, values in results.items():
        mid = statistics.median(values)
        print(
            f"| {name} | {mid:.2f} ({min(values):.2f}–{max(values):.2f}) | "
            f"{mid / raw_median:.2f}× |"
        )
    print("physical bound on an H200: ≈1.16 s (22.5 TFLOP per CFG step × 40 at ~790 TFLOP/s)")


if __name__ == "__main__":
    sys.exit(main())
