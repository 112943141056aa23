"""The daily limit holds for whole requests (issue 21, HIGH): four tabs clicking Generate at
once with SD_DAILY_LIMIT=2 saved 4 images, and six remote tabs made 6 endpoint calls.

The use cases hold places in the history store from the click until the images are saved
(`core.usecases.hold_allowance`), and give back what a refused, failed or stopped request
held. Real SQLite and PostgreSQL, the real demo pipeline and a loopback text-to-image
server; the race runs in two OS processes, as two app replicas sharing one history would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from core import history, limits
from core.auth import LOCAL_USER, Visitor
from core.generation import GenerationError, GenerationRequest
from core.local import LocalBackend
from core.remote import RemoteBackend
from core.settings import load_settings
from core.usecases import check_allowance, generate_and_keep, regenerate_and_verify
from testkit.loopback_server import TextToImageServer

from .conftest import APP_ROOT, SMALL, current_store

VISITOR = Visitor(id=LOCAL_USER)


class _Stopped(BaseException):
    """What Streamlit's Stop or rerun looks like to the code it interrupts."""


@pytest.fixture(name="endpoint", scope="module")
def fixture_endpoint():
    """A loopback text-to-image server with its own tiny pipeline; `requests` counts calls."""
    from core.demo import build_demo_pipeline

    pipe = build_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    server = TextToImageServer(pipe).start()
    yield server
    server.stop()


@pytest.fixture(name="demo_backend", scope="module")
def fixture_demo_backend():
    """The demo pipeline, loaded once for this file's in-process requests."""
    backend = LocalBackend(model="demo", device="cpu", dtype="float32")
    backend.ensure_loaded()
    return backend


def _no_weights(**_options):
    """A loader that fails as a missing model does."""
    raise GenerationError("no weights here")


def _request(seed: int = 7, **overrides) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a quiet lake", "seed": seed, **SMALL, **overrides})


def _limit(monkeypatch, limit: int):
    monkeypatch.setenv("SD_DAILY_LIMIT", str(limit))
    return load_settings()


def _used_and_held() -> tuple[int, int]:
    return current_store().usage(LOCAL_USER, limits.day_start(time.time()))


# --- two processes, four simultaneous clicks ------------------------------------------------
def _worker(env: dict[str, str], meeting, threads: int, requests: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.generate_worker", str(threads), str(meeting), str(requests)],
        cwd=APP_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def _race(tmp_path, env: dict[str, str]) -> list[dict]:
    """Two app processes, two clicks each, all four at once; each request's outcome."""
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    workers = [_worker(env, meeting, 2, 4) for _ in range(2)]
    for worker in workers:  # start both together
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0]
    return [json.loads(line) for out in outputs for line in out.splitlines() if line]


@pytest.mark.parametrize("backend", ["local", "remote"])
def test_four_simultaneous_clicks_from_two_processes_make_exactly_the_limit(
    backend, engine, endpoint, monkeypatch, tmp_path
):
    """SD_DAILY_LIMIT=2, four clicks at once across two app processes sharing one history
    (SQLite or PostgreSQL): exactly 2 images are made and saved, the other 2 clicks are
    refused naming the limit, nothing stays held; in remote mode exactly 2 calls reach
    the endpoint, the credits the limit protects."""
    monkeypatch.setenv("SD_DAILY_LIMIT", "2")
    monkeypatch.setenv("SD_MAX_QUEUED_PER_USER", "5")
    if backend == "remote":
        monkeypatch.setenv("SD_BACKEND", "remote")
        monkeypatch.setenv("SD_REMOTE_URL", f"{endpoint.url}/?key={tmp_path.name}")
    calls_before = len(endpoint.requests)
    outcomes = _race(tmp_path, dict(os.environ))
    made = [o for o in outcomes if o["made"]]
    refused = [o for o in outcomes if o["failed_at"] == "allowance"]
    assert (len(outcomes), len(made), len(refused)) == (4, 2, 2), outcomes
    assert all(o["saved"] == 1 and o["history_error"] is None for o in made), made
    assert all("daily limit" in o["problem"] for o in refused), refused
    assert current_store().count() == 2
    assert _used_and_held() == (2, 0)
    if backend == "remote":
        assert len(endpoint.requests) - calls_before == 2


# --- one process: every way a request ends gives back what it held ---------------------------
def test_places_are_held_while_the_request_runs_and_left_today_counts_them(
    engine, monkeypatch, demo_backend
):
    """While a request runs, "left today" counts its place as being made; once saved it
    counts as made, and nothing stays held."""
    settings = _limit(monkeypatch, 3)
    seen = []

    def on_start() -> None:
        allowance = check_allowance(settings, VISITOR).allowance
        seen.append((allowance.used, allowance.held, allowance.summary()))

    outcome = generate_and_keep(
        _request(num_images=2),
        settings=settings,
        visitor=VISITOR,
        backend=demo_backend,
        session_id="s",
        on_start=on_start,
    )
    assert outcome.shown is not None and len(outcome.record_ids) == 2
    ((used, held, summary),) = seen
    assert (used, held) == (2, 2)
    assert summary.startswith("1 of 3 images left today (2 being made now)")
    assert _used_and_held() == (2, 0)


def test_a_stopped_request_gives_its_places_back(engine, monkeypatch, demo_backend):
    """Streamlit's Stop (a BaseException from a progress update) ends the request: it goes
    through, nothing is kept, and its places are free again."""
    settings = _limit(monkeypatch, 2)

    def stop(_progress) -> None:
        raise _Stopped

    with pytest.raises(_Stopped):
        generate_and_keep(
            _request(num_images=2),
            settings=settings,
            visitor=VISITOR,
            backend=demo_backend,
            session_id="s",
            on_progress=stop,
        )
    assert _used_and_held() == (0, 0)
    assert check_allowance(settings, VISITOR, wanted=2).allowed


def test_a_refused_or_failed_request_gives_its_places_back(engine, monkeypatch, endpoint):
    """A remote answer that fails, and a load that fails, each give back the place they
    held; a request over what is left is refused before anything runs."""
    settings = _limit(monkeypatch, 1)
    # 500: failed at once (a 503 would be retried for up to max_wait while it "scales up").
    failing = RemoteBackend(url=f"{endpoint.url}/?status=500&key=failing", model="demo")
    failed = generate_and_keep(
        _request(), settings=settings, visitor=VISITOR, backend=failing, session_id="s"
    )
    assert failed.failed_at == "generate" and _used_and_held() == (0, 0)

    unloadable = LocalBackend(model="demo", loader=_no_weights)
    failed = generate_and_keep(
        _request(), settings=settings, visitor=VISITOR, backend=unloadable, session_id="s"
    )
    assert failed.failed_at == "load" and _used_and_held() == (0, 0)

    calls = len(endpoint.requests)
    over = generate_and_keep(
        _request(num_images=2),
        settings=settings,
        visitor=VISITOR,
        backend=RemoteBackend(url=f"{endpoint.url}/?key=over", model="demo"),
        session_id="s",
    )
    assert over.failed_at == "allowance" and "you have 1 left today" in over.problem
    assert len(endpoint.requests) == calls  # refused before any call


def test_regenerate_and_verify_holds_one_place_and_spends_it(engine, monkeypatch, demo_backend):
    """Regenerate & verify holds a place from the click and spends it on the image it
    makes; at the limit it is refused; a failed regeneration gives its place back."""
    settings = _limit(monkeypatch, 2)
    made = generate_and_keep(
        _request(), settings=settings, visitor=VISITOR, backend=demo_backend, session_id="s"
    )
    store = history.open_store(settings)
    record = store.get(made.record_ids[0])
    unloadable = LocalBackend(model="demo", loader=_no_weights)
    failed = regenerate_and_verify(
        store, record, settings=settings, visitor=VISITOR, backend=unloadable
    )
    assert failed.error and _used_and_held() == (1, 0)
    verified = regenerate_and_verify(
        store, record, settings=settings, visitor=VISITOR, backend=demo_backend
    )
    assert verified.verification is not None and verified.verification.identical
    assert _used_and_held() == (2, 0)
    refused = regenerate_and_verify(
        store, record, settings=settings, visitor=VISITOR, backend=demo_backend
    )
    assert refused.refused and "daily limit" in refused.refused
