"""Download throughput: the app's download (with byte progress) vs `snapshot_download` alone.

A loopback Hub stand-in (testkit/hub_standin.py) serves a pipeline folder under SD3.5
Medium's repo id with every file body throttled; the saved tiny pipeline is padded with
larger weight files (random bytes: only the transfer is measured, nothing is loaded).
Each run downloads into a fresh HF_HOME in a fresh process (huggingface_hub reads
HF_ENDPOINT and HF_HOME at import); app and plain runs alternate (A P P A …).

- app: `core.download.fetch` (orphan clean-up, disk check, `snapshot_download` with the
  byte counter), after `plan_download` (model_info, diffusers' own file selection, dry
  run), whose seconds are reported apart: a fixed cost, not a throughput;
- plain: `snapshot_download` with the same allow/ignore patterns and no progress class.

Target: app / plain throughput ≥ 0.95×.

    .venv/bin/python -m bench.download_throughput [--mb-per-s 40] [--size-mb 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.common import APP_ROOT, library_versions, machine_facts
from testkit.child import run_child

RUN = """
import json, sys, time
import diffusers  # imported before timing: the app imports it anyway to load the model
from huggingface_hub import snapshot_download
from core import download
mode = sys.argv[1]
plan_seconds, counted = 0.0, 0
start = time.perf_counter()
if mode == "app":
    status = download.LoadStatus()
    plan = download.plan_download(sys.argv[2], token=None, skip=download.T5_COMPONENTS)
    plan_seconds = time.perf_counter() - start
    start = time.perf_counter()
    folder = download.fetch(plan, token=None, status=status)
    counted = status.done_bytes
else:
    patterns = json.loads(sys.argv[3])
    folder = snapshot_download(sys.argv[2], allow_patterns=patterns[0],
                               ignore_patterns=patterns[1])
seconds = time.perf_counter() - start
print("RESULT" + json.dumps({"seconds": seconds, "plan": plan_seconds, "counted": counted}))
"""


def padded_folder(root: Path, size_mb: int) -> Path:
    """The tiny pipeline, its three biggest weights replaced by random bytes (size_mb in all)."""
    from core.demo import save_demo_pipeline

    folder = save_demo_pipeline(root / "tiny-sd3")
    shares = {
        "transformer/diffusion_pytorch_model.safetensors": 0.6,
        "text_encoder_2/model.safetensors": 0.3,
        "text_encoder/model.safetensors": 0.1,
    }
    for name, share in shares.items():
        with open(folder / name, "wb") as handle:
            handle.write(os.urandom(int(size_mb * share * 1_000_000)))
    return folder


def run(mode: str, hub_url: str, repo: str, patterns: str) -> dict:
    home = tempfile.mkdtemp(prefix="bench-hf-")
    env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_HOME": home}
    env.pop("HF_HUB_OFFLINE", None)
    try:
        return run_child(RUN, mode, repo, patterns, env=env, timeout=900)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb-per-s", type=float, default=40.0, help="throttle per connection")
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="app+plain pairs")
    args = parser.parse_args()

    sys.path.insert(0, str(APP_ROOT))
    from testkit.hub_standin import REPO_ID, HubStandIn

    print(machine_facts())
    print(library_versions("huggingface_hub", "diffusers"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = padded_folder(Path(tmp), args.size_mb)
        hub = HubStandIn(folder, bytes_per_second=args.mb_per_s * 1e6).start()
        try:
            # The patterns diffusers picks, found once the way the app finds them.
            probe = tempfile.mkdtemp(prefix="bench-hf-")
            env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": probe}
            code = (
                "import json; from core import download; "
                f"p = download.plan_download({REPO_ID!r}, token=None, "
                "skip=download.T5_COMPONENTS); "
                "print('RESULT' + json.dumps([list(p.allow_patterns), list(p.ignore_patterns),"
                " p.missing_bytes]))"
            )
            allow, ignore, total = run_child(code, env=env, timeout=900)
            shutil.rmtree(probe, ignore_errors=True)
            patterns = json.dumps([allow, ignore])
            print(
                f"{total / 1e6:.0f} MB to fetch, bodies throttled to {args.mb_per_s:g} MB/s "
                "per connection"
            )
            times: dict[str, list[float]] = {"app": [], "plain": [], "plan": []}
            order = []
            for i in range(args.rounds):
                order += ["app", "plain"] if i % 2 == 0 else ["plain", "app"]
            for mode in order:
                result = run(mode, hub.url, REPO_ID, patterns)
                times[mode].append(result["seconds"])
                extra = ""
                if mode == "app":
                    times["plan"].append(result["plan"])
                    extra = f" · counted {result['counted'] / 1e6:.0f} MB"
                    extra += f" · plan before it {result['plan']:.2f} s"
                print(
                    f"  {mode:5s} {result['seconds']:6.2f} s · "
                    f"{total / result['seconds'] / 1e6:5.1f} MB/s{extra}"
                )
        finally:
            hub.stop()
    app, plain = statistics.median(times["app"]), statistics.median(times["plain"])
    print(
        f"median: app {app:.2f} s ({total / app / 1e6:.1f} MB/s), plain {plain:.2f} s "
        f"({total / plain / 1e6:.1f} MB/s) → app/plain throughput {plain / app:.2f}× "
        "(target ≥ 0.95×)"
    )
    print(f"plan (model_info, selection, dry run): median {statistics.median(times['plan']):.2f} s")


if __name__ == "__main__":
    main()
