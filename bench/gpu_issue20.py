"""GPU check for issue 20: compiled by default, quantized plans, offload warm-up (H200).

Builds the full-size random-weight SD3.5 Medium on the GPU (`bench.gpu_sd35`), saves it,
and loads it back through the app's own `core.local.load_pipeline`, then applies the new
pieces the way phase 2 will wire them (`core.compile`, `core.quantize`, `core.warmup`,
`core.quant_plan`). Every stage appends one JSON line to $OUT/gpu20.jsonl as it ends, so a
run cut short still reports. Stages, in priority order (1024², 40 steps, guidance 4.5):

  a  defaults after phase 2: regional compile (each JointTransformerBlock, fullgraph) with
     the cache under a kept folder, VAE as SD_VAE_TILE=auto decides (untiled here): first
     image including the compile, then s/image (targets: ≤ 30 s first, ≤ 2.0 s after)
  b  a second process start reusing that cache folder: its first image (≤ warm + 5 s)
  c  transformer in float8 (torchao weight-only, then dynamic rowwise), compiled: s/image, peak
  d  T5-XXL in int8 on the GPU: prompt-encode time, cosine to bf16, peak
  e  model offload: first vs second image without and with the load-time warm-up
  f  each planner candidate's predicted vs measured peak (8 steps: the peak is per step)

    python bench/gpu_issue20.py [--smoke] [--budget SECONDS] [--stages abcdef]

`--smoke` runs every stage on the CPU at toy size in seconds (compile with the "eager"
backend, int8 where the GPU run uses float8, no offload hooks) to check the plumbing.
On the device (see ../shared/tools/gpu/README.md; wheels in .whl):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \\
        --target /tmp/site .whl/*.whl &&
    PYTHONPATH=.:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 python3 bench/gpu_issue20.py \\
        --budget 450
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file, too

OUT = Path(os.environ.get("OUT", "/tmp/gpu-out"))
LOG = OUT / "gpu20.jsonl"
T0 = time.perf_counter()
FOLDER = Path(os.environ.get("SD35_STANDIN", "/tmp/sd35-standin"))
CACHE_BASE = Path(os.environ.get("COMPILE_BASE", "/tmp/sd-data"))  # phase 2: SD_DATA_DIR


def emit(stage: str, **facts) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"stage": stage, "t": round(time.perf_counter() - T0, 1), **facts},
                      default=str)  # fmt: skip
    print(line, flush=True)
    with LOG.open("a") as f:
        f.write(line + "\n")


def digest(image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()[:16]


class Bench:
    """The device, the request and the timing helpers every stage shares."""

    def __init__(self, smoke: bool, budget: float) -> None:
        import torch

        self.torch = torch
        self.smoke = smoke
        self.budget = budget
        self.cuda = not smoke
        self.device = "cuda" if self.cuda else "cpu"
        self.size, self.steps = (512, 2) if smoke else (1024, 40)
        from core.generation import GenerationRequest

        self.request = GenerationRequest(
            prompt="a lighthouse on a cliff at dusk, volumetric fog, oil painting",
            negative_prompt="blurry",
            seed=1234,
            width=self.size,
            height=self.size,
            num_inference_steps=self.steps,
            guidance_scale=4.5,
        )

    def left(self) -> float:
        return self.budget - (time.perf_counter() - T0)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float | None:
        return round(self.torch.cuda.max_memory_allocated() / 1e9, 2) if self.cuda else None

    def held_gb(self) -> float | None:
        return round(self.torch.cuda.memory_allocated() / 1e9, 2) if self.cuda else None

    def timed(self, fn, *args, **kwargs):
        self.sync()
        began = time.perf_counter()
        out = fn(*args, **kwargs)
        self.sync()
        return time.perf_counter() - began, out

    def generate(self, pipe, request=None):
        """One image through the app's run_pipeline (one image per call, CPU generator)."""
        from core.local import run_pipeline

        images, _ = run_pipeline(pipe, request or self.request)
        return images[0]

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
        self.torch._dynamo.reset()  # the recompile limit is per code object: start clean

    def compile_fn(self):
        if self.smoke:
            return lambda block: block.compile(fullgraph=True, backend="eager")
        return lambda block: block.compile(fullgraph=True)

    def machine(self):
        from core.quant_plan import Machine

        cap = tuple(self.torch.cuda.get_device_capability(0)) if self.cuda else None
        return Machine(self.device, "bfloat16", cap)

    def tmethod(self) -> str:
        """float8 on the GPU; int8 stands in on the CPU smoke run."""
        return "int8" if self.smoke else "fp8"


def load(b: Bench, **memory):
    """The app's load path: core.local.load_pipeline from the saved folder."""
    from core.local import load_pipeline
    from core.memory import MemoryOptions

    options = MemoryOptions(**({"memory": "manual"} | memory)) if memory else MemoryOptions()
    return load_pipeline(model=str(FOLDER), device=b.device, dtype="bfloat16", memory=options)


def stage_build(b: Bench) -> dict:
    import diffusers
    import torchao
    import transformers

    from bench.gpu_sd35 import build_pipeline
    from core.memory import components_in_folder

    emit("env", torch=b.torch.__version__, diffusers=diffusers.__version__,
         transformers=transformers.__version__, torchao=torchao.__version__,
         gpu=b.torch.cuda.get_device_name() if b.cuda else "cpu", cuda=b.torch.version.cuda,
         capability=b.machine().capability)  # fmt: skip
    b.reset_peak()
    seconds, pipe = b.timed(build_pipeline, device=b.device, smoke=b.smoke)
    saved, _ = b.timed(pipe.save_pretrained, FOLDER, safe_serialization=True)
    del pipe
    b.free()
    comps = components_in_folder(FOLDER, "bfloat16")
    emit("build", build_s=round(seconds, 1), save_s=round(saved, 1),
         components_gb={k: round(v / 1e9, 2) for k, v in comps.items()})  # fmt: skip
    return comps


def candidates(b: Bench, comps: dict) -> dict:
    """Every auto-ladder candidate with its prediction (free memory unbounded), by name."""
    from core.quant_plan import plan_quantized

    plan = plan_quantized(comps, machine=b.machine(), free_vram_bytes=10**14,
                          free_ram_bytes=10**14)  # fmt: skip
    return {c.name: c for c in plan.candidates}


def stage_a(b: Bench, comps: dict) -> float | None:
    """Defaults after phase 2: regional compile + kept cache + SD_VAE_TILE=auto."""
    from core.compile import cache_folder, compile_blocks, save_mega_cache, use_cache_folder
    from core.hardware import free_memory
    from core.local import apply_memory_options
    from core.quant_plan import choose_vae_tile

    cache = cache_folder(CACHE_BASE)
    facts = use_cache_folder(cache)
    b.reset_peak()
    load_s, loaded = b.timed(load, b)
    pipe = loaded.pipe
    free_vram, _ = free_memory(b.device) if b.cuda else (None, 0)
    as_is = candidates(b, comps)["as is"]
    available = (free_vram + b.torch.cuda.memory_allocated()) if b.cuda else 10**12
    tile, why = choose_vae_tile("auto", chosen=as_is, machine=b.machine(),
                                available_bytes=available, width=1440, height=1440)  # fmt: skip
    apply_memory_options(pipe, vae_tile=tile)
    blocks = compile_blocks(pipe.transformer, compile_fn=b.compile_fn())
    first, image = b.timed(b.generate, pipe)
    warm = [b.timed(b.generate, pipe)[0] for _ in range(1 if b.smoke else 3)]
    mega = save_mega_cache(cache)
    warm_s = statistics.median(warm)
    emit("a_default_compiled", load_s=round(load_s, 1), vae_tile=tile, vae_reason=why,
         blocks=blocks, cache=str(cache), cache_reused=facts.reused, first_s=round(first, 1),
         warm_s=[round(x, 3) for x in warm], median_s=round(warm_s, 3),
         target_warm_le_2s=warm_s <= 2.0, target_first_le_30s=first <= 30,
         peak_gb=b.peak_gb(), predicted_gb=round(as_is.peak_bytes / 1e9, 2),
         mega_cache_bytes=mega, cache_files=sum(1 for p in cache.rglob("*") if p.is_file()),
         hash=digest(image))  # fmt: skip
    del pipe, loaded
    b.free()
    return warm_s


def stage_b(b: Bench, warm_s: float | None) -> None:
    """A fresh process with the same cache folder: its first image vs a warm one."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child"]
    if b.smoke:
        argv.append("--smoke")
    began = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=max(b.left(), 30))
    line = next((x for x in proc.stdout.splitlines() if '"b_restart"' in x), None)
    facts = json.loads(line) if line else {"error": proc.stderr[-1500:]}
    first = facts.get("first_s")
    emit("b_summary", process_s=round(time.perf_counter() - began, 1), first_s=first,
         warm_s_parent=warm_s, target_first_le_warm_plus_5=(
             first is not None and warm_s is not None and first <= warm_s + 5))  # fmt: skip


def child_restart(b: Bench) -> None:
    from core.compile import cache_folder, compile_blocks, use_cache_folder
    from core.local import apply_memory_options

    began = time.perf_counter()
    facts = use_cache_folder(cache_folder(CACHE_BASE))
    loaded = load(b)
    apply_memory_options(loaded.pipe, vae_tile=0)
    compile_blocks(loaded.pipe.transformer, compile_fn=b.compile_fn())
    first, _ = b.timed(b.generate, loaded.pipe)
    again, _ = b.timed(b.generate, loaded.pipe)
    emit("b_restart", cache_reused=facts.reused, files_before=facts.files_before,
         mega_cache_loaded=facts.mega_cache_loaded, first_s=round(first, 2),
         second_s=round(again, 3), since_start_s=round(time.perf_counter() - began, 1))  # fmt: skip


def stage_c(b: Bench, comps: dict) -> None:
    """The transformer in float8: weight-only, then dynamic rowwise; compiled; s/image, peak."""
    from core.compile import compile_blocks
    from core.local import apply_memory_options
    from core.quantize import quantize_pipeline

    methods = [b.tmethod()] if b.smoke else ["fp8", "fp8-dynamic"]
    for method in methods:
        if b.left() < 60:
            emit("c_skipped", method=method, left_s=round(b.left()))
            continue
        try:
            b.reset_peak()
            loaded = load(b)
            pipe = loaded.pipe
            apply_memory_options(pipe, vae_tile=0)
            q, facts = b.timed(quantize_pipeline, pipe, {"transformer": method})
            held = b.held_gb()
            eager = b.timed(b.generate, pipe)[0]
            compile_blocks(pipe.transformer, compile_fn=b.compile_fn())
            first, image = b.timed(b.generate, pipe)
            warm = [b.timed(b.generate, pipe)[0] for _ in range(1 if b.smoke else 2)]
            emit("c_transformer_float8", method=method, record=facts.label,
                 quantize_s=round(q, 1), held_after_quant_gb=held, eager_s=round(eager, 2),
                 compiled_first_s=round(first, 1), compiled_s=[round(x, 3) for x in warm],
                 peak_gb=b.peak_gb(), hash=digest(image))  # fmt: skip
            del pipe, loaded
        except Exception as exc:  # report and go on
            emit("c_error", method=method, error=f"{type(exc).__name__}: {exc}"[:600])
        b.free()


def stage_d(b: Bench) -> None:
    """T5-XXL in int8 on the GPU: encode time, embeddings' cosine to bf16, peak."""
    from core.local import apply_memory_options
    from core.prompt_cache import encode as encode_prompt
    from core.quantize import quantize_pipeline

    torch = b.torch
    b.reset_peak()
    loaded = load(b)
    pipe = loaded.pipe
    apply_memory_options(pipe, vae_tile=0)

    def encode(p=pipe):
        with torch.inference_mode():
            return encode_prompt(p, b.request)

    encode()
    bf16_s = [b.timed(encode)[0] for _ in range(3)]
    ref = encode()["prompt_embeds"].float()
    image_bf16 = b.timed(b.generate, pipe)[0]
    held_before = b.held_gb()
    q, facts = b.timed(quantize_pipeline, pipe, {"text_encoder_3": "int8"})
    held_after = b.held_gb()
    b.reset_peak()
    encode()
    int8_s = [b.timed(encode)[0] for _ in range(3)]
    got = encode()["prompt_embeds"].float()
    cos = torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0).item()
    t5_only = torch.nn.functional.cosine_similarity(
        ref[:, 77:].flatten(), got[:, 77:].flatten(), dim=0
    ).item()  # T5's 256 tokens (the first 77 are the CLIPs')
    image_s, _ = b.timed(b.generate, pipe)
    emit("d_t5_int8", record=facts.label, quantize_s=round(q, 1),
         held_before_gb=held_before, held_after_gb=held_after,
         encode_bf16_s=[round(x, 4) for x in bf16_s], encode_int8_s=[round(x, 4) for x in int8_s],
         cosine_prompt_embeds=round(cos, 5), cosine_t5_tokens=round(t5_only, 5),
         image_bf16_s=round(image_bf16, 2), image_t5_int8_s=round(image_s, 2),
         peak_gb=b.peak_gb())  # fmt: skip
    del pipe, loaded
    b.free()


def stage_e(b: Bench) -> None:
    """Model offload: first vs second image, without and with the warm-up at load."""
    from core.warmup import prefault_weights

    for warm in (False, True):
        if b.left() < 75:
            emit("e_skipped", warm=warm, left_s=round(b.left()))
            continue
        try:
            b.reset_peak()
            load_s, loaded = b.timed(load, b, **({"offload": "model"} if b.cuda else {}))
            warm_s = b.timed(prefault_weights, loaded.pipe)[0] if warm else 0.0
            first = b.timed(b.generate, loaded.pipe)[0]
            second = b.timed(b.generate, loaded.pipe)[0]
            emit("e_offload_warmup", warm=warm, load_s=round(load_s, 1),
                 warmup_s=round(warm_s, 1), first_s=round(first, 2), second_s=round(second, 2),
                 peak_gb=b.peak_gb())  # fmt: skip
            if loaded.plan.offload != "none":
                loaded.pipe.remove_all_hooks()
            del loaded
        except Exception as exc:
            emit("e_error", warm=warm, error=f"{type(exc).__name__}: {exc}"[:600])
        b.free()


def load_candidate(b: Bench, c):
    """Load as phase 2 will: from_pretrained, drop T5, quantize on the GPU, offload, VAE."""
    from diffusers import StableDiffusion3Pipeline

    from core.local import apply_memory_options
    from core.quantize import quantize_pipeline

    torch = b.torch
    without = {"text_encoder_3": None, "tokenizer_3": None} if c.drop_t5 else {}
    pipe = StableDiffusion3Pipeline.from_pretrained(FOLDER, dtype=torch.bfloat16, **without)
    pipe.set_progress_bar_config(disable=True)
    quant = {k: ("int8" if b.smoke else v) for k, v in c.quant.items()}
    # On the GPU each Linear moves there to be quantized; an offload plan's components go
    # back to RAM one by one (the GPU never holds more than one).
    quantize_pipeline(pipe, quant, device="cuda" if b.cuda else None,
                      back_to_cpu=c.offload != "none")  # fmt: skip
    if c.offload == "model" and b.cuda:
        pipe.enable_model_cpu_offload(device="cuda")
    elif c.offload == "sequential" and b.cuda:
        pipe.enable_sequential_cpu_offload(device="cuda")
    else:
        pipe.to(b.device)
    apply_memory_options(pipe, vae_tile=512)
    return pipe


def stage_f(b: Bench, comps: dict) -> None:
    """Each candidate plan: predicted vs measured peak, 8 steps (the peak is per step)."""
    request = dataclasses.replace(b.request, num_inference_steps=2 if b.smoke else 8)
    for name, c in candidates(b, comps).items():
        if c.offload == "sequential":
            continue  # measured 2026-12-04: 1.15 GB vs 1.5 predicted; 14 s for 8 steps
        if b.smoke and c.offload != "none":
            continue  # offload needs CUDA
        if b.left() < 45:
            emit("f_skipped", plan=name, left_s=round(b.left()))
            continue
        try:
            b.reset_peak()
            load_s, pipe = b.timed(load_candidate, b, c)
            gen_s, image = b.timed(b.generate, pipe, request)
            peak = b.peak_gb()
            predicted = round(c.peak_bytes / 1e9, 2)
            emit("f_plan", plan=name, quant=c.quant_label, offload=c.offload, drop_t5=c.drop_t5,
                 load_s=round(load_s, 1), gen_s=round(gen_s, 2), peak_gb=peak,
                 predicted_gb=predicted,
                 over=None if not peak else round(predicted / peak - 1, 3),
                 hash=digest(image))  # fmt: skip
            if c.offload != "none" and b.cuda:
                pipe.remove_all_hooks()
            del pipe
        except Exception as exc:
            emit("f_error", plan=name, error=f"{type(exc).__name__}: {exc}"[:600])
        b.free()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--budget", type=float, default=450)
    ap.add_argument("--stages", default="abcdef")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from core.quantize import quiet_torchao_import_logs

    quiet_torchao_import_logs()
    b = Bench(args.smoke, args.budget)
    if b.cuda and not b.torch.cuda.is_available():
        print("gpu_issue20: no CUDA device here; use --smoke for the CPU plumbing check")
        return
    if args.child:
        child_restart(b)
        return
    comps = stage_build(b)
    warm = None
    for stage in args.stages:
        if b.left() < 30:
            emit("stopped", before=stage, left_s=round(b.left()))
            break
        try:
            if stage == "a":
                warm = stage_a(b, comps)
            elif stage == "b":
                stage_b(b, warm)
            elif stage == "c":
                stage_c(b, comps)
            elif stage == "d":
                stage_d(b)
            elif stage == "e":
                stage_e(b)
            elif stage == "f":
                stage_f(b, comps)
        except Exception as exc:  # one stage failing must not lose the others
            emit(f"{stage}_error", error=f"{type(exc).__name__}: {exc}"[:800])
            b.free()
    emit("done", left_s=round(b.left()))


if __name__ == "__main__":
    main()
