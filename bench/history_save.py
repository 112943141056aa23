"""Time one history save of a 1024² image (PNG + thumbnail + row) on SQLite and PostgreSQL.

    .venv/bin/python -m bench.history_save [--runs 15]

Side by side in one run, alternating engines: SQLite with files in a temp data dir, and a
throwaway PostgreSQL server (testkit/pg.py) over loopback TCP with its default fsync on, as a
real server would run. The image is a smooth gradient with noise, about the PNG size of a
real SD3.5 image. Encoding (PNG, WebP, pixel hash) is the same on both and included.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _image():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:1024, 0:1024]
    base = np.stack([x / 4, y / 4, (x + y) / 8], axis=-1)
    noise = rng.normal(0, 12, size=(1024, 1024, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype("uint8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    from core import history
    from core.generation import GenerationRequest
    from testkit.pg import Cluster, find_bin

    image = _image()
    facts = {"model": "demo", "model_revision": "demo", "device": "cpu", "dtype": "float32"}
    request = GenerationRequest(prompt="a lake", seed=1, width=1024, height=1024)
    cluster = Cluster(find_bin())
    try:
        cluster.start(fsync=True)
        cluster.admin("CREATE DATABASE bench")
        with tempfile.TemporaryDirectory() as tmp:
            stores = {
                "sqlite": history.HistoryStore(Path(tmp) / "data"),
                "postgresql": history.HistoryStore(url=cluster.url("bench")),
            }
            times: dict[str, list[float]] = {name: [] for name in stores}
            for run in range(args.runs + 1):  # the first round is a warm-up
                for name, store in stores.items():
                    record = history.new_record(
                        request, seed=run, facts=facts, session_id="b", duration_seconds=1.0
                    )
                    start = time.perf_counter()
                    saved = store.save(image, record)
                    if run:
                        times[name].append(time.perf_counter() - start)
            png = len(stores["postgresql"].png_bytes(saved.id))
    finally:
        cluster.remove()
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, samples in times.items():
        print(
            f"{name:>10}: median {medians[name] * 1000:.0f} ms "
            f"(min {min(samples) * 1000:.0f}, max {max(samples) * 1000:.0f}) over {len(samples)}"
        )
    ratio = medians["postgresql"] / medians["sqlite"]
    print(f"PNG {png / 1e6:.2f} MB; PostgreSQL / SQLite: {ratio:.2f}×")


if __name__ == "__main__":
    main()
