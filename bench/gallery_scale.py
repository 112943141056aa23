"""Time the gallery page's first render with 10 and with 10,000 stored records.

    .venv/bin/python bench/gallery_scale.py [--counts 10 10000] [--repeat 3]

Each count gets its own data dir filled quickly (one encoded PNG and thumbnail copied per
record, rows inserted in one transaction: what the page reads is the same as after real
saves). "first" is a fresh process-wide store (start-up repair runs over every file);
"again" is a rerun with the store already open, as every later page view is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fill(data_dir: Path, count: int) -> None:
    import dataclasses
    import sqlite3

    from PIL import Image

    from core import history
    from core.generation import GenerationRequest

    store = history.HistoryStore(data_dir)
    image = Image.new("RGB", (512, 512), (90, 120, 150))
    facts = {"model": "demo", "model_revision": "demo", "device": "cpu", "dtype": "float32"}
    rows = []
    png = thumb = None
    for i in range(count):
        request = GenerationRequest(
            prompt=f"prompt number {i}, a lake",
            seed=i,
            width=512,
            height=512,
            num_inference_steps=2,
        )
        record = history.new_record(
            request,
            seed=i,
            facts=facts,
            session_id=f"s{i % 7}",
            duration_seconds=0.2,
            created_at=1.7e9 + i,
        )
        if png is None:
            png, thumb = history.encode_png(image, record), history.encode_thumbnail(image)
        for path, data in (
            (store.image_path(record.id), png),
            (store.thumb_path(record.id), thumb),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        rows.append(dataclasses.astuple(record))
    fields = [f.name for f in dataclasses.fields(history.HistoryRecord)]
    with sqlite3.connect(store.db_path) as conn:
        conn.executemany(
            f"INSERT INTO records ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
            rows,
        )


def render_seconds(data_dir: Path, *, fresh_store: bool, expected: int) -> tuple[float, float]:
    """Return (wall, CPU) seconds of one render; CPU time is steadier on a shared machine."""
    from streamlit.testing.v1 import AppTest

    from core import history

    os.environ["SD_DATA_DIR"] = str(data_dir)
    if fresh_store:
        history._STORES.clear()
    at = AppTest.from_file(str(ROOT / "pages" / "gallery.py"), default_timeout=300)
    start, cpu = time.perf_counter(), time.process_time()
    at.run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert not at.exception, at.exception
    cards = sum(t.value.startswith("Seed ") for t in at.text)
    assert cards == min(expected, history.PAGE_SIZE), cards
    return seconds, cpu


def _ms(samples: list[tuple[float, float]]) -> str:
    wall = statistics.median(s[0] for s in samples) * 1000
    cpu = statistics.median(s[1] for s in samples) * 1000
    return f"median {wall:.0f} ms wall, {cpu:.0f} ms CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 24, 10_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ["SD_MODEL"] = "demo"
    with tempfile.TemporaryDirectory() as tmp:
        render_seconds(
            Path(tmp) / "warmup", fresh_store=True, expected=0
        )  # imports, Streamlit set-up
        for count in args.counts:
            data_dir = Path(tmp) / f"n{count}"
            start = time.perf_counter()
            fill(data_dir, count)
            filled = time.perf_counter() - start
            first = [
                render_seconds(data_dir, fresh_store=True, expected=count)
                for _ in range(args.repeat)
            ]
            again = [
                render_seconds(data_dir, fresh_store=False, expected=count)
                for _ in range(args.repeat)
            ]
            print(
                f"{count:>6} records (filled in {filled:.1f} s): first render "
                f"(with start-up repair) {_ms(first)}; again {_ms(again)}"
            )


if __name__ == "__main__":
    main()
