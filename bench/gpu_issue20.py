"""GPU check for issue 20: the app's own default path, quantized plans, offload (H200).

Builds the full-size random-weight SD3.5 Medium on the GPU (`bench.gpu_sd35`), saves it,
and from then on goes through the app itself: `core.local.LocalBackend` (as
`core.service` builds it, the compile cache under SD_DATA_DIR) and its `generate`, with
the settings' defaults unless a stage says otherwise. Every stage appends one JSON line to
$OUT/gpu20.jsonl as it ends, so a run cut short still reports. Stages, in priority order
(1024², 40 steps, guidance 4.5, one image per call):

  a  the default path: SD_QUANT=auto, SD_VAE_TILE=auto, SD_COMPILE=auto (compiles each
     JointTransformerBlock on CUDA, cache kept under SD_DATA_DIR): load, first image
     including the compile, then s/image (targets: ≤ 30 s first, ≤ 2.0 s after), peak vs
     the plan's prediction, the plan's VAE and compile decisions; then, time permitting,
     two images at 832×1216 (the first recompiles: what a size change costs)
  b  a second process start on the same SD_DATA_DIR: its first image (≤ warm + 5 s)
  c  SD_QUANT=fp8 (T5 int8 + transformer float8 weight-only), compiled: s/image, peak
  d  SD_QUANT=t5-int8: prompt-encode time int8 vs bf16, cosine of the embeddings, s/image
  e  model offload with the load-time prefault (the loader's): first vs second image
     (SD_COMPILE=false, as the 21.1 / 6.1 s baseline was measured); then without the
     prefault for contrast when time is left
  f  each planner candidate (SD_MEMORY=manual as the candidate says, SD_COMPILE=false):
     predicted vs measured peak, 8 steps (the peak is per step)
  g  the transformer in float8 with dynamic rowwise activations (not an SD_QUANT choice):
     s/image and peak beside c's weight-only

    python bench/gpu_issue20.py [--smoke] [--budget SECONDS] [--stages abcdefg]
    python bench/gpu_issue20.py --report gpu20.jsonl    # the figures, one line per stage

`--smoke` runs every stage on the CPU at toy size (SD_COMPILE=true with the "eager"
backend, int8 where the GPU run uses float8, offload calls as no-ops) to check the plumbing.
On the device (see ../shared/tools/gpu/README.md; wheels in .whl):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \\
        --target /tmp/site .whl/*.whl &&
    PYTHONPATH=.:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 python3 bench/gpu_issue20.py \\
        --budget 420
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
DATA_DIR = Path(os.environ.get("SD_DATA_DIR", "/tmp/sd-data"))  # the compile cache's home


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

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
        self.torch._dynamo.reset()  # the recompile limit is per code object: start clean

    def machine(self):
        from core.quant_plan import Machine

        cap = tuple(self.torch.cuda.get_device_capability(0)) if self.cuda else None
        return Machine(self.device, "bfloat16", cap)

    def tmethod(self) -> str:
        """float8 on the GPU; int8 stands in on the CPU smoke run."""
        return "int8" if self.smoke else "fp8"


def backend(b: Bench, *, compile: str = "auto", **memory):
    """The app's backend as core.service builds it: SD_MODEL = the saved folder, SD_DEVICE /
    SD_DTYPE auto, the compile cache under SD_DATA_DIR; memory settings as given (none:
    the defaults, SD_MEMORY=auto, SD_QUANT=auto, SD_VAE_TILE=auto)."""
    from core.local import LocalBackend
    from core.memory import MemoryOptions

    if b.smoke and compile == "auto":
        compile = "true"  # the CPU would not compile: run the plumbing with "eager"
    return LocalBackend(
        model=str(FOLDER),
        memory=MemoryOptions(**memory) if memory else None,
        compile=compile,
        compile_cache=DATA_DIR,
    )


def smoke_patches(b: Bench) -> None:
    """On the CPU: compile with the "eager" backend (no inductor), offload as a no-op."""
    if not b.smoke:
        return
    import functools

    from diffusers import StableDiffusion3Pipeline

    import core.local
    from core.compile import compile_blocks

    eager = functools.partial(
        compile_blocks, compile_fn=lambda block: block.compile(fullgraph=True, backend="eager")
    )
    core.local.compile_blocks = eager
    StableDiffusion3Pipeline.enable_model_cpu_offload = lambda self, **kw: None
    real_plan = core.local._plan

    def plan_on_cpu(*args, **kwargs):  # the CPU refuses offload plans: ask without, then say
        model, choice, memory, *rest = args
        offload = memory.offload
        plan = real_plan(model, choice, dataclasses.replace(memory, offload=None), *rest, **kwargs)
        return dataclasses.replace(plan, offload=offload or plan.offload)

    core.local._plan = plan_on_cpu


def timed_image(b: Bench, be, request=None) -> tuple[float, object]:
    """Wall seconds of one `LocalBackend.generate` (the page's call) and its image."""
    seconds, result = b.timed(be.generate, request or b.request)
    return seconds, result.images[0]


def plan_facts(loaded) -> dict:
    """What the loaded backend's plan and load decided, for the JSON line."""
    facts = loaded.facts()
    plan = facts.plan
    free = plan.available_bytes
    return {
        "chosen": plan.chosen, "verdict": plan.verdict, "quant": plan.quant_label,
        "offload": plan.offload, "drop_t5": plan.drop_t5, "vae_tile": plan.vae_tile,
        "vae_reason": plan.vae_reason, "predicted_gb": round(plan.needed_bytes / 1e9, 2),
        "available_gb": None if free is None else round(free / 1e9, 1),
        "quantization": facts.quantization, "compiled": facts.compiled,
        "compile_reason": facts.compile_reason, "cache": facts.compile_cache,
        "cache_reused": facts.compile_cache_reused, "load_s": round(facts.load_seconds, 1),
        "prefault_gb": round(facts.prefault_bytes / 1e9, 2),
        "prefault_s": round(facts.prefault_seconds, 1),
    }  # fmt: skip


def release(b: Bench, be) -> None:
    be.unload()
    b.free()


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


def stage_a(b: Bench) -> float | None:
    """The default path: LocalBackend.generate with every setting at its default."""
    import shutil

    from core.compile import MEGA_CACHE_FILE

    shutil.rmtree(DATA_DIR / "torch-compile", ignore_errors=True)  # a first start, honestly
    be = backend(b)
    b.reset_peak()
    load_s, loaded = b.timed(be.ensure_loaded)
    first, image = timed_image(b, be)
    warm = [timed_image(b, be)[0] for _ in range(1 if b.smoke else 3)]
    warm_s = statistics.median(warm)
    peak = b.peak_gb()  # at 1024², before another size
    cache = Path(loaded.facts().compile_cache or DATA_DIR)
    mega = cache / MEGA_CACHE_FILE
    mega_bytes = mega.stat().st_size if mega.is_file() else 0
    other = {}
    if b.left() > 240:  # another size recompiles the blocks: what a size change costs
        side = (832, 1216) if not b.smoke else (512, 768)
        request = dataclasses.replace(b.request, width=side[0], height=side[1])
        other = {f"size_{side[0]}x{side[1]}_s": [round(timed_image(b, be, request)[0], 2)
                                                 for _ in range(2)]}  # fmt: skip
    emit("a_default_path", **plan_facts(loaded), load_wall_s=round(load_s, 1),
         first_s=round(first, 2), first_compile_s=loaded.first_image.seconds,
         warm_s=[round(x, 3) for x in warm], median_s=round(warm_s, 3),
         target_first_le_30s=first <= 30, target_warm_le_2s=warm_s <= 2.0,
         peak_gb=peak, mega_cache_bytes=mega_bytes,
         cache_files=sum(1 for p in cache.rglob("*") if p.is_file()),
         hash=digest(image), **other)  # fmt: skip
    release(b, be)
    return warm_s


def stage_b(b: Bench, warm_s: float | None) -> None:
    """A fresh process on the same SD_DATA_DIR: its first image vs a warm one."""
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
    began = time.perf_counter()
    be = backend(b)
    loaded = be.ensure_loaded()
    first, _ = timed_image(b, be)
    again, _ = timed_image(b, be)
    cache = loaded.compile_cache
    emit("b_restart", **plan_facts(loaded), files_before=cache.files_before if cache else None,
         mega_cache_loaded=cache.mega_cache_loaded if cache else None,
         first_s=round(first, 2), second_s=round(again, 3),
         since_start_s=round(time.perf_counter() - began, 1))  # fmt: skip


def stage_c(b: Bench) -> None:
    """SD_QUANT=fp8 (T5 int8, transformer float8 weight-only), compiled by default."""
    be = backend(b, quant=b.tmethod())
    b.reset_peak()
    load_s, loaded = b.timed(be.ensure_loaded)
    held = b.held_gb()
    first, image = timed_image(b, be)
    warm = [timed_image(b, be)[0] for _ in range(1 if b.smoke else 3)]
    emit("c_sd_quant_fp8", **plan_facts(loaded), quantize_s=round(loaded.quant.seconds, 1),
         held_after_load_gb=held, first_s=round(first, 2), warm_s=[round(x, 3) for x in warm],
         median_s=round(statistics.median(warm), 3), peak_gb=b.peak_gb(),
         hash=digest(image))  # fmt: skip
    release(b, be)


def stage_d(b: Bench) -> None:
    """SD_QUANT=t5-int8: encode time int8 vs bf16 (same weights), cosine, s/image."""
    from core.prompt_cache import encode as encode_prompt

    torch = b.torch
    plain = backend(b, quant="none", compile="false")
    pipe = plain.ensure_loaded().pipe

    def encode(p):
        with torch.inference_mode():
            return encode_prompt(p, b.request)

    encode(pipe)
    bf16_s = [b.timed(encode, pipe)[0] for _ in range(3)]
    ref = encode(pipe)["prompt_embeds"].float().cpu()
    release(b, plain)
    del pipe
    be = backend(b, quant="t5-int8")
    b.reset_peak()
    loaded = be.ensure_loaded()
    encode(loaded.pipe)
    int8_s = [b.timed(encode, loaded.pipe)[0] for _ in range(3)]
    got = encode(loaded.pipe)["prompt_embeds"].float().cpu()
    cos = torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0).item()
    t5_only = torch.nn.functional.cosine_similarity(
        ref[:, 77:].flatten(), got[:, 77:].flatten(), dim=0
    ).item()  # T5's 256 tokens (the first 77 are the CLIPs')
    first = timed_image(b, be)[0]
    warm = [timed_image(b, be)[0] for _ in range(1 if b.smoke else 2)]
    emit("d_t5_int8", **plan_facts(loaded), quantize_s=round(loaded.quant.seconds, 1),
         encode_bf16_s=[round(x, 4) for x in bf16_s], encode_int8_s=[round(x, 4) for x in int8_s],
         cosine_prompt_embeds=round(cos, 5), cosine_t5_tokens=round(t5_only, 5),
         first_s=round(first, 2), warm_s=[round(x, 3) for x in warm],
         peak_gb=b.peak_gb())  # fmt: skip
    release(b, be)


def stage_e(b: Bench) -> None:
    """Model offload: the loader pages the weights in ("loaded" means loaded); then the
    same without it, for contrast (baseline 2026-12-04: 21.1 s first, 6.1 s second)."""
    import core.local

    real = core.local.prefault_weights
    for prefault in (True, False):
        if b.left() < 75:
            emit("e_skipped", prefault=prefault, left_s=round(b.left()))
            continue
        if not prefault:
            core.local.prefault_weights = lambda pipe: None
        try:
            be = backend(b, compile="false", quant="none", offload="model")
            b.reset_peak()
            load_s, loaded = b.timed(be.ensure_loaded)
            first = timed_image(b, be)[0]
            second = timed_image(b, be)[0]
            emit("e_offload", prefault=prefault, **plan_facts(loaded),
                 load_wall_s=round(load_s, 1), first_s=round(first, 2),
                 second_s=round(second, 2), peak_gb=b.peak_gb())  # fmt: skip
            release(b, be)
        except Exception as exc:
            emit("e_error", prefault=prefault, error=f"{type(exc).__name__}: {exc}"[:600])
            b.free()
        finally:
            core.local.prefault_weights = real


def candidates(b: Bench, comps: dict) -> list:
    """Every auto-ladder candidate (free memory unbounded), sequential offload left out
    (measured 2026-12-04: 1.15 GB vs 1.5 predicted, 14 s for 8 steps)."""
    from core.memory import default_machine
    from core.quant_plan import plan_quantized

    machine = default_machine(b.device, "bfloat16", capability=b.machine().capability)
    plan = plan_quantized(comps, machine=machine, free_vram_bytes=10**14, free_ram_bytes=10**14)
    return [c for c in plan.candidates if c.offload != "sequential"]


def quant_setting(c, b: Bench) -> str:
    """The SD_QUANT value that gives candidate `c`'s quantization (manual memory)."""
    methods = dict(c.quant)
    if not methods:
        return "none"
    if "transformer" not in methods:
        return "t5-int8"
    return b.tmethod() if methods["transformer"] == "fp8" else "int8"


def stage_f(b: Bench, comps: dict) -> None:
    """Each candidate through the app's loader (SD_MEMORY=manual as the candidate says):
    the plan's predicted peak vs the measured one, 8 steps."""
    request = dataclasses.replace(b.request, num_inference_steps=2 if b.smoke else 8)
    for c in candidates(b, comps):
        if b.left() < 45:
            emit("f_skipped", plan=c.name, left_s=round(b.left()))
            continue
        try:
            be = backend(b, compile="false", memory="manual", quant=quant_setting(c, b),
                         offload=c.offload, drop_t5=c.drop_t5)  # fmt: skip
            b.reset_peak()
            loaded = be.ensure_loaded()
            gen_s, image = timed_image(b, be, request)
            peak = b.peak_gb()
            predicted = round(loaded.plan.needed_bytes / 1e9, 2)
            emit("f_plan", plan=c.name, **plan_facts(loaded), gen_s=round(gen_s, 2),
                 peak_gb=peak, over=None if not peak else round(predicted / peak - 1, 3),
                 hash=digest(image))  # fmt: skip
            release(b, be)
        except Exception as exc:
            emit("f_error", plan=c.name, error=f"{type(exc).__name__}: {exc}"[:600])
            b.free()


def stage_g(b: Bench) -> None:
    """The transformer in float8 with dynamic rowwise activations, compiled (not an
    SD_QUANT choice: beside c's weight-only to see what it would add)."""
    from core.quantize import quantize_pipeline

    be = backend(b, quant="none")
    b.reset_peak()
    loaded = be.ensure_loaded()
    method = "int8" if b.smoke else "fp8-dynamic"
    q, facts = b.timed(quantize_pipeline, loaded.pipe, {"transformer": method})
    first, image = timed_image(b, be)
    warm = [timed_image(b, be)[0] for _ in range(1 if b.smoke else 3)]
    emit("g_transformer_fp8_dynamic", record=facts.label, quantize_s=round(q, 1),
         first_s=round(first, 2), warm_s=[round(x, 3) for x in warm],
         median_s=round(statistics.median(warm), 3), peak_gb=b.peak_gb(),
         hash=digest(image))  # fmt: skip
    release(b, be)


# The figures docs/benchmarks.md asks for, per stage (`--report FILE` prints them).
REPORT = {
    "env": ("gpu", "capability", "torch", "torchao"),
    "a_default_path": ("chosen", "vae_tile", "compiled", "load_wall_s", "first_s", "warm_s",
                       "median_s", "peak_gb", "predicted_gb", "mega_cache_bytes",
                       "cache_files", "size_832x1216_s"),
    "b_restart": ("cache_reused", "files_before", "mega_cache_loaded", "first_s", "second_s"),
    "b_summary": ("first_s", "warm_s_parent", "target_first_le_warm_plus_5"),
    "c_sd_quant_fp8": ("quantization", "quantize_s", "first_s", "median_s", "peak_gb",
                       "predicted_gb"),
    "d_t5_int8": ("encode_bf16_s", "encode_int8_s", "cosine_prompt_embeds",
                  "cosine_t5_tokens", "first_s", "warm_s", "peak_gb", "predicted_gb"),
    "e_offload": ("prefault", "load_wall_s", "prefault_gb", "prefault_s", "first_s",
                  "second_s", "peak_gb", "predicted_gb"),
    "f_plan": ("plan", "predicted_gb", "peak_gb", "over", "gen_s"),
    "g_transformer_fp8_dynamic": ("record", "first_s", "median_s", "peak_gb"),
}  # fmt: skip


def report(path: str) -> None:
    """One line per stage with the figures the benchmarks page needs; errors in full."""
    for line in Path(path).read_text().splitlines():
        facts = json.loads(line)
        stage = facts["stage"]
        keys = REPORT.get(stage)
        if keys is None:  # errors, skips, stops, build, done: everything
            print(stage, {k: v for k, v in facts.items() if k != "stage"})
        else:
            print(stage, {k: facts.get(k) for k in keys})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--budget", type=float, default=420)
    ap.add_argument("--stages", default="abcdefg")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--report", metavar="GPU20_JSONL", help="print a run's figures and exit")
    args = ap.parse_args()
    if args.report:
        report(args.report)
        return
    from core.quiet import quiet_library_noise

    quiet_library_noise()
    b = Bench(args.smoke, args.budget)
    if b.cuda and not b.torch.cuda.is_available():
        print("gpu_issue20: no CUDA device here; use --smoke for the CPU plumbing check")
        return
    smoke_patches(b)
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
                warm = stage_a(b)
            elif stage == "b":
                stage_b(b, warm)
            elif stage == "c":
                stage_c(b)
            elif stage == "d":
                stage_d(b)
            elif stage == "e":
                stage_e(b)
            elif stage == "f":
                stage_f(b, comps)
            elif stage == "g":
                stage_g(b)
        except Exception as exc:  # one stage failing must not lose the others
            emit(f"{stage}_error", error=f"{type(exc).__name__}: {exc}"[:800])
            b.free()
    emit("done", left_s=round(b.left()))


if __name__ == "__main__":
    main()
