"""Time the gallery page's first render with 10 and with 10,000 stored records.

    .venv/bin/python -m bench.gallery_scale [--engine sqlite postgresql] [--counts 10 10000]
                                            [--repeat 3]

Each count gets its own history, filled quickly (one encoded PNG and thumbnail reused per
record, rows inserted in one transaction: what the page reads is the same as after real
saves): a data dir with files for SQLite, a database with the bytes in its `images` table
for PostgreSQL (a throwaway server from testkit/pg.py, as in the tests). "first" is a fresh
process-wide store (for SQLite, start-up repair runs beside it); "again" is a rerun with
the store already open, as every later page view is.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fill(store, count: int) -> None:
    from PIL import Image
    from sqlalchemy import insert

    from core import history
    from core.generation import GenerationRequest
    from core.history import schema

    image = Image.new("RGB", (512, 512), (90, 120, 150))
    facts = {"model": "demo", "model_revision": "demo", "device": "cpu", "dtype": "float32"}
    rows, blobs = [], []
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
        if store.local:
            for path, data in (
                (store.image_path(record.id), png),
                (store.thumb_path(record.id), thumb),
            ):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        else:
            blobs.append({"id": record.id, "png": png, "thumb": thumb})
        rows.append(dataclasses.asdict(record))
    with store.engine.begin() as conn:
        if rows:
            conn.execute(insert(schema.records), rows)
        if blobs:
            conn.execute(insert(schema.images), blobs)
    if not store.local:
        with store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")


def render_seconds(env: dict[str, str], *, fresh_store: bool, expected: int) -> tuple[float, float]:
    """Return (wall, CPU) seconds of one render; CPU time is steadier on a shared machine."""
    from streamlit.testing.v1 import AppTest

    from core import history

    os.environ.update(env)
    if fresh_store:
        for store in history._STORES.values():
            store.engine.dispose()
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


def run_engine(engine: str, counts: list[int], repeat: int, tmp: Path, cluster) -> None:
    from core import history

    firsts = {}
    for count in counts:
        if engine == "sqlite":
            data_dir = tmp / f"{engine}-{count}"
            env = {"SD_DATA_DIR": str(data_dir), "SD_HISTORY_URL": ""}
            store = history.HistoryStore(data_dir)
        else:
            name = f"bench{count}"
            cluster.admin(f"CREATE DATABASE {name}")
            env = {"SD_DATA_DIR": str(tmp / "empty"), "SD_HISTORY_URL": cluster.url(name)}
            store = history.HistoryStore(url=cluster.url(name))
        start = time.perf_counter()
        fill(store, count)
        store.engine.dispose()
        filled = time.perf_counter() - start
        render_seconds(env, fresh_store=True, expected=count)  # warm this history's caches
        first = [render_seconds(env, fresh_store=True, expected=count) for _ in range(repeat)]
        again = [render_seconds(env, fresh_store=False, expected=count) for _ in range(repeat)]
        firsts[count] = statistics.median(s[0] for s in first)
        print(
            f"{engine:>10} {count:>6} records (filled in {filled:.1f} s): first render "
            f"{_ms(first)}; again {_ms(again)}",
            flush=True,
        )
    if len(counts) > 1:
        low, high = min(counts), max(counts)
        print(f"{engine:>10} first render {high} vs {low}: {firsts[high] / firsts[low]:.2f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 10_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ["SD_MODEL"] = "demo"
    os.environ.pop("SD_HISTORY_URL", None)
    cluster = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if "postgresql" in args.engine:
                from testkit.pg import Cluster, find_bin

                cluster = Cluster(find_bin())
                cluster.start()
            render_seconds(
                {"SD_DATA_DIR": str(Path(tmp) / "warmup")}, fresh_store=True, expected=0
            )  # imports, Streamlit set-up
            for engine in args.engine:
                run_engine(engine, args.counts, args.repeat, Path(tmp), cluster)
        finally:
            if cluster is not None:
                cluster.remove()


if __name__ == "__main__":
    main()
