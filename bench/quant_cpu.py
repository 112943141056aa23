"""CPU: T5-XXL in int8 vs bf16, and whole quantized plans, on the full-size SD3.5 stand-in.

Needs the random-weight stand-in (`../shared/tools/standin/`, ~17 GB disk). Each measurement
runs in its own process, so its peak RSS is its own; `all` runs them one after another and
checks free memory before each (a 4 GB margin on top of the expected peak) — the machine
is shared.

    python -m bench.quant_cpu all DIR [--size 1024] [--steps 2]
    python -m bench.quant_cpu t5 {bf16,bf16-prefault,int8,int8-keep,int8-config} DIR OUT
    python -m bench.quant_cpu pipeline {none,t5-int8,int8} DIR SIZE STEPS
    python -m bench.quant_cpu cosine A.npy B.npy

`t5`: T5 alone — load, quantize (int8: `core.quantize.quantize_pipeline`, the app's path;
int8-keep: the same without handing back the mapped bf16 pages; int8-config: transformers'
`TorchAoConfig` in `from_pretrained`; bf16-prefault: `core.warmup.prefault_weights` at
load, no quantization), encode the prompt and the
negative prompt twice (cold: pages the weights in; warm), save the embeddings; peak RSS,
anonymous and file-backed. `pipeline`: the transformer alone first (step time at 512², CFG
batch 2), then the rest of the pipeline with the plan's quantization, one generation at
SIZE² through `core.local.run_pipeline` (per-call wall and CPU seconds by hooks), the
transformer step again, and the planner's prediction against the measured peak. CPU seconds
(all threads) are reported beside wall seconds: on a shared machine they vary less.
Lines start with RESULT.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

PROMPT = "a lighthouse on a cliff at dusk, volumetric fog, oil painting, highly detailed"
NEGATIVE = "blurry, low quality"
GB = 1e9


def emit(tag: str, **facts) -> None:
    print("RESULT " + json.dumps({"tag": tag, **facts}, default=str), flush=True)


class Peaks:
    """Sample RssAnon / RssFile every 50 ms; peak of each and of their sum."""

    def __init__(self) -> None:
        self.anon = self.file = self.total = 0.0
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def now() -> dict[str, float]:
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "VmHWM", "VmRSS"):
                    out[key] = int(value.split()[0]) * 1024 / GB
        return out

    def _run(self) -> None:
        while not self._stop:
            s = self.now()
            self.anon = max(self.anon, s["RssAnon"])
            self.file = max(self.file, s["RssFile"])
            self.total = max(self.total, s["RssAnon"] + s["RssFile"])
            time.sleep(0.05)

    def report(self) -> dict[str, float]:
        s = self.now()
        return {
            "peak_anon_gb": round(self.anon, 2),
            "peak_file_gb": round(self.file, 2),
            "peak_sampled_gb": round(self.total, 2),
            "vmhwm_gb": round(s["VmHWM"], 2),
            "maxrss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB, 2),
            "rss_now_gb": round(s["VmRSS"], 2),
        }


def t5_mode(mode: str, folder: str, out: str) -> None:
    peaks = Peaks()
    import numpy as np
    import torch
    from transformers import T5EncoderModel, T5TokenizerFast

    from core.quantize import facts_of, quantize_pipeline, torchao_config
    from core.warmup import _inner, prefault_weights

    path = Path(folder, "text_encoder_3")
    start = time.perf_counter()
    kwargs = {}
    if mode == "int8-config":
        from transformers import TorchAoConfig

        kwargs["quantization_config"] = TorchAoConfig(torchao_config("int8"))
    model = T5EncoderModel.from_pretrained(path, dtype=torch.bfloat16, **kwargs).eval()
    load_s = time.perf_counter() - start
    after_load = Peaks.now()
    holder = type("Holder", (), {})()
    holder.text_encoder_3 = model
    holder.components = {"text_encoder_3": model}
    quant_s = prefault_s = 0.0
    released = 0
    if mode in ("int8", "int8-keep"):
        facts = quantize_pipeline(holder, {"text_encoder_3": "int8"}, release=mode == "int8")
        quant_s, released = facts.seconds, facts.released_bytes
    if mode == "bf16-prefault":
        prefault_s = prefault_weights(holder).seconds
    label = facts_of(holder).label
    tokenizer = T5TokenizerFast.from_pretrained(Path(folder, "tokenizer_3"))

    def encode():
        outs = []
        for text in (PROMPT, NEGATIVE):
            ids = tokenizer(
                text, padding="max_length", max_length=256, truncation=True, return_tensors="pt"
            ).input_ids
            outs.append(model(ids)[0])
        return torch.cat(outs)

    times, cpu = [], []
    with torch.inference_mode():
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            embeds = encode()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    np.save(out + ".npy", embeds.float().numpy())
    emit(
        "t5",
        mode=mode,
        quant=label,
        load_s=round(load_s, 1),
        quantize_s=round(quant_s, 1),
        released_gb=round(released / GB, 2),
        prefault_s=round(prefault_s, 1),
        rss_after_load_gb=round(after_load["VmRSS"], 2),
        encode_s=[round(x, 2) for x in times],
        encode_cpu_s=[round(x, 2) for x in cpu],  # CPU time of all threads: less noisy
        held_gb=round(
            sum(
                i.numel() * i.element_size()
                for t in [*model.parameters(), *model.buffers()]
                for i in _inner(t)
            )
            / GB,
            2,
        ),
        **peaks.report(),
    )


def cosine(a: str, b: str) -> None:
    import numpy as np

    x, y = np.load(a).astype(np.float64), np.load(b).astype(np.float64)
    flat = float(x.ravel() @ y.ravel() / (np.linalg.norm(x) * np.linalg.norm(y)))
    xt, yt = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    per_token = (xt * yt).sum(1) / (np.linalg.norm(xt, axis=1) * np.linalg.norm(yt, axis=1))
    emit(
        "cosine",
        a=a,
        b=b,
        whole=round(flat, 5),
        per_token_min=round(float(per_token.min()), 5),
        per_token_median=round(float(np.median(per_token)), 5),
    )


def _step_times(transformer, size: int, reps: int) -> list[float]:
    """One CFG step (batch 2) of the transformer alone at size², as step_bench.py does."""
    import torch

    g = torch.Generator().manual_seed(0)
    lat = size // 8
    x = torch.randn(2, 16, lat, lat, generator=g).to(torch.bfloat16)
    enc = torch.randn(2, 77 + 256, 4096, generator=g).to(torch.bfloat16)
    pooled = torch.randn(2, 2048, generator=g).to(torch.bfloat16)
    t = torch.tensor([1000.0, 1000.0])
    times = []
    with torch.inference_mode():
        for _ in range(reps):
            began, cpu = time.perf_counter(), time.process_time()
            transformer(
                hidden_states=x,
                encoder_hidden_states=enc,
                pooled_projections=pooled,
                timestep=t,
                return_dict=False,
            )
            times.append(
                (round(time.perf_counter() - began, 2), round(time.process_time() - cpu, 2))
            )
    return times


def pipeline_mode(quant: str, folder: str, size: int, steps: int) -> None:
    peaks = Peaks()
    import torch
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    from core.generation import GenerationRequest
    from core.local import apply_memory_options, run_pipeline
    from core.memory import GB as BYTES_GB
    from core.memory import components_in_folder
    from core.quant_plan import SCHEMES, Machine, plan_quantized
    from core.quantize import quantize_pipeline

    scheme = SCHEMES[quant]
    transformer = SD3Transformer2DModel.from_pretrained(
        Path(folder, "transformer"), dtype=torch.bfloat16
    ).eval()
    if "transformer" in scheme:
        quantize_pipeline(type("H", (), {"transformer": transformer})(), {"transformer": "int8"})
    alone = _step_times(transformer, 512, 3)  # the first rep pages the weights in
    pipe = StableDiffusion3Pipeline.from_pretrained(
        folder, dtype=torch.bfloat16, transformer=transformer
    )
    facts = quantize_pipeline(pipe, {k: v for k, v in scheme.items() if k != "transformer"})
    apply_memory_options(pipe, vae_tile=512)
    pipe.set_progress_bar_config(disable=True)
    calls: dict[str, list[float]] = {}

    def hook(name, module):
        def pre(*_):
            module._t0, module._c0 = time.perf_counter(), time.process_time()

        def post(*_):
            wall = round(time.perf_counter() - module._t0, 2)
            calls.setdefault(name, []).append((wall, round(time.process_time() - module._c0, 2)))

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    for name in ("text_encoder", "text_encoder_2", "text_encoder_3", "transformer"):
        hook(name, getattr(pipe, name))
    hook("vae.decoder", pipe.vae.decoder)
    request = GenerationRequest(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        seed=1,
        width=size,
        height=size,
        num_inference_steps=steps,
    )
    began = time.perf_counter()
    images, _ = run_pipeline(pipe, request)
    generation_s = time.perf_counter() - began
    resident = Peaks.now()["VmRSS"]
    beside = _step_times(pipe.transformer, 512, 2)
    import hashlib

    sha = hashlib.sha256(images[0].tobytes()).hexdigest()[:16]
    comps = components_in_folder(folder, "bfloat16")
    plan = plan_quantized(
        comps,
        machine=Machine("cpu", mapped_weights=True),  # bf16 files loaded as bf16
        free_vram_bytes=None,
        free_ram_bytes=10**13,
        quant=quant,
        drop_t5=False,
    )
    predicted = plan.chosen.peak_bytes / BYTES_GB
    report = peaks.report()
    measured = max(report["vmhwm_gb"], report["peak_sampled_gb"])
    emit(
        "pipeline",
        quant=quant,
        record=facts.label if facts.components else "transformer only" if scheme else "none",
        size=size,
        steps=steps,
        generation_s=round(generation_s, 1),
        calls_s=calls,
        step_512_alone_s=alone,
        step_512_in_pipeline_s=beside,
        step_ratio_wall=round(
            statistics.median(w for w, _ in beside) / min(w for w, _ in alone[1:]), 3
        ),
        step_ratio_cpu=round(
            statistics.median(c for _, c in beside) / min(c for _, c in alone[1:]), 3
        ),
        rss_after_generation_gb=round(resident, 2),
        predicted_gb=round(predicted, 2),
        measured_gb=measured,
        over_measured=round(predicted / measured - 1, 3),
        pixel_sha=sha,
        **report,
    )


# Expected peaks (GB) to check free memory against before each run.
EXPECTED_GB = {"t5 bf16": 10.5, "t5 bf16-prefault": 10.5, "t5 int8": 10.5}
EXPECTED_GB |= {"t5 int8-keep": 15.0, "t5 int8-config": 15.0}
EXPECTED_GB |= {"pipeline t5-int8": 14.0, "pipeline int8": 12.0, "pipeline none": 19.0}
MARGIN_GB = 4.0


def _available_gb() -> float:
    import psutil

    return psutil.virtual_memory().available / GB


def run_all(folder: str, size: int, steps: int, only: list[str]) -> None:
    out = Path(os.environ.get("QUANT_OUT", "/tmp/quant_cpu"))
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        ("t5 bf16", ["t5", "bf16", folder, str(out / "t5_bf16")]),
        ("t5 int8", ["t5", "int8", folder, str(out / "t5_int8")]),
        ("t5 bf16-prefault", ["t5", "bf16-prefault", folder, str(out / "t5_bf16_prefault")]),
        ("t5 int8-keep", ["t5", "int8-keep", folder, str(out / "t5_int8_keep")]),
        ("t5 int8-config", ["t5", "int8-config", folder, str(out / "t5_int8_config")]),
        ("pipeline t5-int8", ["pipeline", "t5-int8", folder, str(size), str(steps)]),
        ("pipeline int8", ["pipeline", "int8", folder, str(size), str(steps)]),
    ]
    for name, argv in jobs:
        if only and name not in only:
            continue
        need = EXPECTED_GB[name] + MARGIN_GB
        for _ in range(30):  # wait up to 5 minutes for other engineers' tests to finish
            if _available_gb() >= need:
                break
            time.sleep(10)
        else:
            emit("skipped", job=name, available_gb=round(_available_gb(), 1), need_gb=need)
            continue
        emit("start", job=name, available_gb=round(_available_gb(), 1), load=os.getloadavg())
        subprocess.run([sys.executable, "-m", "bench.quant_cpu", *argv], check=False)
    a, b = out / "t5_bf16.npy", out / "t5_int8.npy"
    if a.exists() and b.exists():
        cosine(str(a), str(b))
    c = out / "t5_int8_config.npy"
    if a.exists() and c.exists():
        cosine(str(a), str(c))


def main() -> None:
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        return
    what = args[0]
    if what == "t5":
        t5_mode(args[1], args[2], args[3])
    elif what == "cosine":
        cosine(args[1], args[2])
    elif what == "pipeline":
        pipeline_mode(args[1], args[2], int(args[3]), int(args[4]))
    elif what == "all":
        size = int(args[args.index("--size") + 1]) if "--size" in args else 1024
        steps = int(args[args.index("--steps") + 1]) if "--steps" in args else 2
        only = args[args.index("--only") + 1].split(",") if "--only" in args else []
        run_all(args[1], size, steps, only)
    else:
        print(__doc__)


if __name__ == "__main__":
    main()
