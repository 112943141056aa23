"""Grids and LoRAs, side by side in one run: a 2×3 grid vs the same 6 requests one by one, and
the LoRA switch cost of three ways to take a LoRA off again.

1. **Grid vs one by one** (tiny demo pipeline, float32, CPU): the 6 cells of a 2×3 grid
   (X: guidance 3, 4.5, 6; Y: prompt S/R fox → cat) run by `LocalBackend.generate_grid`
   (what Generate grid runs: one queue turn per cell, a grid-sized prompt cache) vs the
   same 6 requests through `LocalBackend.generate` (6 clicks; its 4-entry prompt cache
   cleared at the start of each round). Rounds alternate the order. Pixels of each cell
   must be identical both ways. Target (issue 19): grid / one by one ≤ 1.05×.
2. **LoRA switch cost** (tiny pipeline, 64², 2 steps): request without LoRA → with → without,
   `--cycles` times, for each removal method: `unload_lora_weights` (the one `core.lora`
   uses), `delete_adapters` and `disable_lora` (adapter kept loaded). Reported: the time
   to put the LoRA on and to take it off (median), and whether the request without LoRA gives
   bit-identical pixels after every cycle.
3. **The same switch at SD3.5 Medium's layer sizes**: the real Medium transformer config
   with `--medium-layers` of its 24 layers (random bf16 weights), a rank-16 LoRA on every
   attention projection; on/off time and LoRA size, extrapolated linearly to 24 layers
   (the cost is per adapted layer); one transformer forward before and after must match.

4. **Through the backend**: requests without a LoRA, with one, and without again through
   `LocalBackend.generate` (the file read once before): the switch's share of a request,
   and whether the request without LoRA gives the same pixels after every switch.
5. **SD_COMPILE** (`--compile`): the tiny pipeline's transformer compiled as the app does
   (`transformer.compile()`), then a LoRA put on and taken off: each switch's image time.

    .venv/bin/python -m bench.grid_lora [--rounds 2] [--size 512] [--steps 2] [--cycles 5]
        [--medium-layers 2] [--compile] [--only grid|switch|backend|medium|compile]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import library_versions, machine_facts
from testkit.render import raw_pixels


def _grid_vs_one_by_one(args) -> None:
    import core.local
    from core.generation import GenerationRequest
    from core.grid import plan_grid
    from core.local import LocalBackend, load_pipeline

    loaded = load_pipeline(model="demo", device="cpu", dtype="float32")
    backend = LocalBackend(model="demo", device="cpu", dtype="float32", loader=lambda **_: loaded)
    backend.ensure_loaded()
    base = GenerationRequest(
        prompt="a red fox on a snowy hill at dusk",
        negative_prompt="blurry",
        seed=7,
        width=args.size,
        height=args.size,
        num_inference_steps=args.steps,
        family="demo",
    )
    plan = plan_grid(
        base, x_kind="guidance", x_text="3, 4.5, 6", y_kind="prompt_sr", y_text="fox, cat"
    )
    times: dict[str, list[float]] = {"grid": [], "one by one": []}
    # CPU seconds of this process too: on a 2-core machine shared with others, wall time
    # swings 0.7–6 s for the same cell while CPU time stays within ~±30 %.
    cpu: dict[str, list[float]] = {"grid": [], "one by one": []}
    encodes: dict[str, int] = {}
    pixels: dict[str, list[bytes]] = {}
    real_encode = core.local.encode_prompt
    counted: list[str] = []

    def counting_encode(pipe, request):
        counted.append(request.prompt)
        return real_encode(pipe, request)

    core.local.encode_prompt = counting_encode  # counts the prompt encodes of both paths

    def grid() -> None:
        counted.clear()
        start, cpu_start = time.perf_counter(), time.process_time()
        outcome = backend.generate_grid(plan, user="bench")  # one queue turn per cell
        times["grid"].append(time.perf_counter() - start)
        cpu["grid"].append(time.process_time() - cpu_start)
        encodes["grid"] = len(counted)
        pixels["grid"] = [image.tobytes() for image in outcome.images]

    def one_by_one() -> None:
        backend.prompt_cache.clear()
        counted.clear()
        start, cpu_start = time.perf_counter(), time.process_time()
        results = [backend.generate(cell.request, user="bench") for cell in plan.cells]
        times["one by one"].append(time.perf_counter() - start)
        cpu["one by one"].append(time.process_time() - cpu_start)
        encodes["one by one"] = len(counted)
        pixels["one by one"] = [r.images[0].tobytes() for r in results]

    for round_ in range(args.rounds):
        for run in (grid, one_by_one) if round_ % 2 == 0 else (one_by_one, grid):
            run()
    same = pixels["grid"] == pixels["one by one"]
    grid_t, single_t = (statistics.median(times[k]) for k in ("grid", "one by one"))
    # Each round runs both paths back to back: its ratio is the least disturbed by load
    # that drifts over minutes on a shared machine.
    paired = [g / o for g, o in zip(times["grid"], times["one by one"], strict=True)]
    print(
        f"\n1. 2×3 grid vs the same 6 requests one by one ({args.size}², {args.steps} steps, "
        f"tiny pipeline, median of {args.rounds} rounds)"
    )
    print(f"   {'path':<12} {'wall s':>8} {'CPU s':>8} {'per cell wall s':>16} {'encodes':>8}")
    for key, total in (("grid", grid_t), ("one by one", single_t)):
        cpu_total = statistics.median(cpu[key])
        print(
            f"   {key:<12} {total:8.3f} {cpu_total:8.3f} {total / plan.count:16.3f} "
            f"{encodes[key]:>8}"
        )
    cpu_paired = [g / o for g, o in zip(cpu["grid"], cpu["one by one"], strict=True)]
    print(
        f"   grid / one by one, wall: {grid_t / single_t:.3f}× (medians); per round "
        + ", ".join(f"{r:.3f}×" for r in paired)
    )
    print(
        f"   grid / one by one, CPU: median per round {statistics.median(cpu_paired):.3f}× ("
        + ", ".join(f"{r:.3f}×" for r in cpu_paired)
        + f") · pixels identical per cell: {same}"
    )


def _switch_methods(pipe, weights, cycles: int) -> None:
    from core.lora import ADAPTER_PREFIX, _load, applied_loras, remove_loras

    name = f"{ADAPTER_PREFIX}0"
    plain = raw_pixels(pipe)
    rows = []
    for method in ("unload_lora_weights", "delete_adapters", "disable_lora"):
        on_times, off_times, identical, lora_pixels = [], [], True, set()
        if method == "disable_lora":
            _load(pipe, weights, name)  # loaded once, switched on and off
            pipe.disable_lora()
        for _ in range(cycles):
            identical &= raw_pixels(pipe) == plain
            context = applied_loras(pipe, [(weights, 1.0)])
            start = time.perf_counter()
            if method == "unload_lora_weights":
                context.__enter__()
            elif method == "delete_adapters":
                _load(pipe, weights, name)
                pipe.set_adapters([name], [1.0])
            else:
                pipe.enable_lora()
                pipe.set_adapters([name], [1.0])
            on = time.perf_counter()
            lora_pixels.add(raw_pixels(pipe))
            off_start = time.perf_counter()
            if method == "unload_lora_weights":
                context.__exit__(None, None, None)
            elif method == "delete_adapters":
                pipe.delete_adapters([name])
            else:
                pipe.disable_lora()
            off = time.perf_counter()
            on_times.append(on - start)
            off_times.append(off - off_start)
            identical &= raw_pixels(pipe) == plain
        remove_loras(pipe)  # the wrappers delete/disable left behind
        rows.append((method, on_times, off_times, identical, len(lora_pixels) == 1))
    print(f"\n2. LoRA switch cost, tiny pipeline, {cycles} cycles (median seconds)")
    print(
        f"   {'method':<20} {'on s':>8} {'off s':>8} {'without LoRA identical':>23} "
        f"{'LoRA stable':>12}"
    )
    for method, on_t, off_t, same, stable in rows:
        print(
            f"   {method:<20} {statistics.median(on_t):8.4f} {statistics.median(off_t):8.4f} "
            f"{str(same):>23} {str(stable):>12}"
        )


def _medium_switch(layers: int, cycles: int, tmp: Path) -> None:
    import torch
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    from bench.gpu_sd35 import SD35_MEDIUM_TRANSFORMER
    from core.demo import build_demo_pipeline
    from core.demo_lora import ATTENTION, make_demo_lora
    from core.lora import applied_loras, read_lora

    config = dict(
        SD35_MEDIUM_TRANSFORMER,
        num_layers=layers,
        dual_attention_layers=tuple(range(min(layers, 13))),
    )
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(**config).to(torch.bfloat16).eval()
    tiny = build_demo_pipeline()
    pipe = StableDiffusion3Pipeline(**{**tiny.components, "transformer": transformer})
    targets = (*ATTENTION, "to_add_out")
    path = make_demo_lora(pipe, tmp / "medium.safetensors", rank=16, targets=targets)
    weights = read_lora(path)
    generator = torch.Generator().manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 16, 32, 32, generator=generator).to(torch.bfloat16),
        encoder_hidden_states=torch.randn(1, 77, 4096, generator=generator).to(torch.bfloat16),
        pooled_projections=torch.randn(1, 2048, generator=generator).to(torch.bfloat16),
        timestep=torch.tensor([500.0]),
    )

    def forward():
        with torch.inference_mode():
            return transformer(**inputs, return_dict=False)[0]

    before = forward()
    on_times, off_times = [], []
    for _ in range(cycles):
        context = applied_loras(pipe, [(weights, 1.0)])
        start = time.perf_counter()
        context.__enter__()
        on = time.perf_counter()
        context.__exit__(None, None, None)
        off = time.perf_counter()
        on_times.append(on - start)
        off_times.append(off - on)
    same = torch.equal(before, forward())
    scale = 24 / layers
    size = path.stat().st_size
    on_m, off_m = statistics.median(on_times), statistics.median(off_times)
    print(
        f"\n3. SD3.5 Medium layer sizes, {layers} of 24 layers, bf16, rank-16 LoRA on "
        f"{len(targets)} attention projections per block ({cycles} cycles)"
    )
    print(f"   {'':<22} {'measured':>10} {'× 24/' + str(layers) + ' layers':>16}")
    print(f"   {'LoRA file MB':<22} {size / 1e6:10.2f} {size / 1e6 * scale:16.1f}")
    print(f"   {'on (load+weight) s':<22} {on_m:10.3f} {on_m * scale:16.2f}")
    print(f"   {'off (unload) s':<22} {off_m:10.3f} {off_m * scale:16.2f}")
    print(f"   transformer output bit-identical after {cycles} on/off cycles: {same}")


def _backend_switch(args, tmp: Path) -> None:
    """Requests through `LocalBackend.generate`: without a LoRA, with one, without again."""
    from core.demo_lora import make_demo_lora
    from core.generation import GenerationRequest, LoraChoice
    from core.local import LocalBackend

    backend = LocalBackend(model="demo", device="cpu", dtype="float32", lora_dir=tmp)
    make_demo_lora(backend.ensure_loaded().pipe, tmp / "grain.safetensors")
    plain = GenerationRequest(
        prompt="a fox", seed=5, width=512, height=512, num_inference_steps=1, family="demo"
    )
    lora = GenerationRequest(**{**vars(plain), "loras": (LoraChoice("grain", 1.0),)})
    backend.generate(lora)  # the file is read once; what follows is the switch alone
    times: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, list[float]] = {"without": [], "with": []}
    pixels: dict[str, set[bytes]] = {"without": set(), "with": set()}
    for _ in range(args.cycles):
        for key, request in (("without", plain), ("with", lora), ("without", plain)):
            start, cpu_start = time.perf_counter(), time.process_time()
            result = backend.generate(request)
            times[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - cpu_start)
            pixels[key].add(result.images[0].tobytes())
    w, wo = (statistics.median(times[k]) for k in ("with", "without"))
    cw, cwo = (statistics.median(cpu[k]) for k in ("with", "without"))
    print(
        f"\n4. Through the backend: 512², 1 step, without → with LoRA → without, "
        f"{args.cycles} cycles (median seconds)"
    )
    print(f"   request without LoRA: wall {wo:.3f} · CPU {cwo:.3f}")
    print(f"   request with LoRA:    wall {w:.3f} · CPU {cw:.3f}")
    print(f"   the switch (with − without): wall {w - wo:+.3f} · CPU {cw - cwo:+.3f}")
    print(
        f"   without-LoRA pixels identical before and after every switch: "
        f"{len(pixels['without']) == 1} · LoRA pixels stable: {len(pixels['with']) == 1}"
    )


def _compiled_switch(cycles: int, tmp: Path) -> None:
    """What SD_COMPILE would pay: a compiled transformer, a LoRA put on and taken off."""
    import torch

    from core.demo import build_demo_pipeline
    from core.demo_lora import make_demo_lora
    from core.lora import applied_loras, read_lora

    pipe = build_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    weights = read_lora(make_demo_lora(pipe, tmp / "compiled.safetensors"))
    pipe.transformer.compile()

    def render() -> float:
        generator = torch.Generator(device="cpu").manual_seed(5)
        start = time.perf_counter()
        with torch.inference_mode():
            pipe("a fox", num_inference_steps=2, width=512, height=512, generator=generator)
        return time.perf_counter() - start

    rows = [("first image (compiles)", render()), ("second image", render())]
    for cycle in range(cycles):
        with applied_loras(pipe, [(weights, 1.0)]):
            rows.append((f"with LoRA, switch {cycle + 1}", render()))
        rows.append((f"without again, switch {cycle + 1}", render()))
    print("\n5. SD_COMPILE: the tiny pipeline's transformer compiled (torch.compile, CPU)")
    for label, seconds in rows:
        print(f"   {label:<28} {seconds:8.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--medium-layers", type=int, default=2)
    parser.add_argument(
        "--compile", action="store_true", help="also time LoRA switches on a compiled transformer"
    )
    parser.add_argument("--only", choices=("grid", "switch", "backend", "medium", "compile"))
    args = parser.parse_args()

    import torch

    from core.demo import build_demo_pipeline
    from core.demo_lora import make_demo_lora
    from core.lora import read_lora

    print(machine_facts())
    print(
        library_versions("torch", "diffusers", "peft"), f"· torch threads {torch.get_num_threads()}"
    )

    def wanted(part: str) -> bool:
        return args.only in (None, part)

    if wanted("grid"):
        _grid_vs_one_by_one(args)
    with tempfile.TemporaryDirectory() as tmp:
        if wanted("switch"):
            pipe = build_demo_pipeline()
            pipe.set_progress_bar_config(disable=True)
            weights = read_lora(make_demo_lora(pipe, Path(tmp) / "grain.safetensors"))
            _switch_methods(pipe, weights, args.cycles)
        if wanted("backend"):
            _backend_switch(args, Path(tmp))
        if args.medium_layers > 0 and wanted("medium"):
            _medium_switch(args.medium_layers, args.cycles, Path(tmp))
        if args.compile or args.only == "compile":
            _compiled_switch(min(args.cycles, 3), Path(tmp))


if __name__ == "__main__":
    main()
