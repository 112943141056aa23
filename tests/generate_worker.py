"""Click Generate in several "tabs" of one app process at once (the daily-limit race tests).

    python -m tests.generate_worker THREADS MEETING_DIR REQUESTS

Reads the settings from the environment (SD_DAILY_LIMIT, SD_DATA_DIR or SD_HISTORY_URL,
SD_BACKEND, SD_REMOTE_URL) as an app process does, builds its backend (the demo pipeline,
loaded before the race, or the remote one), prints "ready", waits for a line on stdin (so
several workers start together), then THREADS threads each run `generate_and_keep` for one
512², 1-step image at the same moment. It prints one JSON line per request.

MEETING_DIR makes the race as tight as it can be: a request that was accepted waits
(in `on_start`, before it generates) until all REQUESTS requests across every worker were
either accepted or refused. So no image is made, let alone saved, before every click has
been decided: a limit checked only at the click lets all of them through, every time.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

from testkit.child import race_threads

MEETING_SECONDS = 120.0  # a wait no healthy run comes near; then the request goes on


def main() -> None:
    threads, meeting, requests = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    from core.auth import LOCAL_USER, Visitor
    from core.generation import GenerationRequest
    from core.settings import load_settings
    from core.usecases import generate_and_keep

    settings = load_settings()
    if settings.backend == "remote":
        from core.remote import RemoteBackend

        backend = RemoteBackend(url=settings.remote_url, model=settings.model)
    else:
        from core.local import LocalBackend

        backend = LocalBackend(model="demo", device="cpu", dtype="float32")
        backend.ensure_loaded()

    def decided() -> None:
        (meeting / uuid.uuid4().hex).touch()

    def accepted() -> None:
        decided()
        deadline = time.monotonic() + MEETING_SECONDS
        while len(list(meeting.iterdir())) < requests and time.monotonic() < deadline:
            time.sleep(0.02)

    def click(n: int) -> str:
        request = GenerationRequest(
            prompt=f"a race, click {n}",
            seed=os.getpid() * 10 + n,
            width=512,
            height=512,
            num_inference_steps=1,
        )
        outcome = generate_and_keep(
            request,
            settings=settings,
            visitor=Visitor(id=LOCAL_USER),
            backend=backend,
            session_id=f"worker-{n}",
            on_start=accepted,
        )
        if outcome.failed_at == "allowance":
            decided()
        shown = outcome.shown
        return json.dumps(
            {
                "made": 0 if shown is None else len(shown.pngs),
                "saved": sum(1 for record_id in outcome.record_ids if record_id),
                "failed_at": outcome.failed_at,
                "problem": outcome.problem,
                "history_error": None if shown is None else shown.history_error,
            }
        )

    race_threads(click, threads)


if __name__ == "__main__":
    main()
