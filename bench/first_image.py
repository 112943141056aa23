"""First-image time after a cold start: load + first 512² image, with and without the read-in.

Each run is a fresh process loading a saved pipeline folder (`SD_MODEL=<folder>` path of
`load_pipeline`) after the folder's pages were dropped from the kernel's page cache
(`posix_fadvise(DONTNEED)`, no root needed): a cold disk as after a download or reboot.

- read-in: `load_pipeline` reads every weight file once with byte progress before
  `from_pretrained` (issue 13's "load that means loaded");
- lazy: `read_weights=False`, the earlier behaviour: safetensors are memory-mapped and the
  first generation faults the pages in.

On the tiny demo folder (1.8 MB) both are dominated by imports and the difference is noise;
the point of the read-in shows only with full-size weights (measured on the full-size
stand-in: 0.47 GB resident after "Model loaded"; T5's first call 8.6–12.3 s vs 2.3–5.2 s).

    .venv/bin/python -m bench.first_image [--folder DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from bench.common import library_versions, machine_facts
from testkit.child import run_child

RUN = """
import json, sys, time
from pathlib import Path
from core.download import drop_from_page_cache, weight_files
import torch, diffusers  # imports are not what this compares
from core.generation import GenerationRequest
from core.local import load_pipeline, run_pipeline
folder, read = sys.argv[1], sys.argv[2] == "read-in"
drop_from_page_cache(weight_files(folder))
start = time.perf_counter()
loaded = load_pipeline(model=folder, device="cpu", dtype="float32", read_weights=read)
load = time.perf_counter() - start
run_pipeline(loaded.pipe, GenerationRequest(prompt="a fox", width=512, height=512,
                                            num_inference_steps=2))
total = time.perf_counter() - start
print("RESULT" + json.dumps({"load": load, "first_image": total - load, "total": total}))
"""


def run(folder: Path, mode: str) -> dict:
    return run_child(RUN, str(folder), mode, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="a saved pipeline (default: the demo)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    print(machine_facts())
    print(library_versions("torch", "diffusers", "safetensors"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            from core.demo import save_demo_pipeline

            folder = save_demo_pipeline(Path(tmp) / "tiny-sd3")
        from core.download import weight_files

        size = sum(p.stat().st_size for p in weight_files(folder))
        print(f"{folder}: {size / 1e6:.1f} MB of weights, page cache dropped before each run")
        results: dict[str, list[dict]] = {"read-in": [], "lazy": []}
        for r in range(args.rounds):
            for mode in ("read-in", "lazy") if r % 2 == 0 else ("lazy", "read-in"):
                result = run(folder, mode)
                results[mode].append(result)
                print(
                    f"  {mode:8s} load {result['load']:.2f} s · first image "
                    f"{result['first_image']:.2f} s · total {result['total']:.2f} s"
                )
    for mode, rows in results.items():
        print(
            f"median {mode:8s} load {statistics.median(r['load'] for r in rows):.2f} s · "
            f"first image {statistics.median(r['first_image'] for r in rows):.2f} s · "
            f"total {statistics.median(r['total'] for r in rows):.2f} s"
        )


if __name__ == "__main__":
    main()
