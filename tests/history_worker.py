"""Save records into a history from a separate OS process (the multi-process tests).

    python -m tests.history_worker URL COUNT TAG [SIDE]

Waits for a line on stdin (so several workers start together), then saves COUNT images of
random noise (SIDE² pixels), printing "saved <id>" after each commit.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    url, count, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    side = int(sys.argv[4]) if len(sys.argv) > 4 else 512
    from PIL import Image

    from core import history
    from core.generation import GenerationRequest

    store = history.HistoryStore(url=url)
    print("ready", flush=True)
    sys.stdin.readline()
    facts = {"model": "demo", "model_revision": "demo", "device": "cpu", "dtype": "float32"}
    for i in range(count):
        image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
        request = GenerationRequest(prompt=f"{tag} {i}", seed=i, width=512, height=512)
        record = history.new_record(
            request, seed=i, facts=facts, session_id=tag, duration_seconds=0.1
        )
        saved = store.save(image, record)
        print(f"saved {saved.id}", flush=True)


if __name__ == "__main__":
    main()
