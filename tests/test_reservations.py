"""The daily limit holds under concurrency: places are reserved in the store atomically
(issue 21, HIGH: four tabs clicking Generate at once with SD_DAILY_LIMIT=2 saved 4 images).

Real SQLite and a real PostgreSQL; threads of one process and separate OS processes race
for the last places, and exactly the limit gets through."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from core import history, limits
from core.generation import GenerationRequest

from .conftest import APP_ROOT, SMALL, current_store

ALICE, BOB = "alice@example.com", "bob@example.com"
FACTS = {"model": "demo", "model_revision": "demo", "device": "cpu", "dtype": "float32"}


def _record(owner=ALICE, seed=1):
    return history.new_record(
        GenerationRequest(prompt="a quiet lake", seed=seed, **SMALL),
        seed=seed,
        facts=FACTS,
        session_id="s",
        duration_seconds=0.1,
        owner=owner,
    )


def _image(seed=1):
    return Image.new("RGB", (32, 32), (seed % 256, 0, 0))


def _today() -> float:
    return limits.day_start(time.time())


def test_threads_racing_for_the_last_places_get_exactly_the_limit(engine):
    """Limit 5 with 2 saved and 1 regenerated today: of 12 threads reserving at once,
    exactly 2 get a place; the rest are refused with the numbers; Bob is not affected."""
    store = current_store()
    first = store.save(_image(1), _record(seed=1))
    store.save(_image(2), _record(seed=2))
    store.note_regenerate(ALICE, first)
    barrier = threading.Barrier(12)
    got, refused, errors = [], [], []

    def race():
        barrier.wait()
        try:
            got.append(store.reserve(ALICE, 1, 5, _today()))
        except limits.LimitReached as exc:
            refused.append(exc)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=race) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (len(got), len(refused)) == (2, 10)
    assert store.held(ALICE) == 2 and store.usage(ALICE, _today()) == (3, 2)
    numbers = refused[0].allowance
    assert (numbers.limit, numbers.used, numbers.held, refused[0].wanted) == (5, 5, 2, 1)
    assert "made or started your 5 images for today (the daily limit; 2 are still being made" in (
        str(refused[0])
    )
    assert store.reserve(BOB, 5, 5, _today()).places == 5


def _race_worker(url: str, limit: int, threads: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.reserve_worker",
            url,
            ALICE,
            str(limit),
            repr(_today()),
            str(threads),
        ],
        cwd=APP_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


@pytest.fixture(name="shared_url", params=["postgresql", "sqlite"])
def fixture_shared_url(request, tmp_path):
    """One history database two processes can open: a PostgreSQL URL or a SQLite file."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / history.DB_NAME}"


def test_two_processes_racing_for_the_last_places_get_exactly_the_limit(shared_url):
    """Two app processes, 4 threads each, race for 3 places left of 4: exactly 3 get one,
    across both processes, and the database holds exactly those."""
    store = history.HistoryStore(url=shared_url)
    store.save(_image(), _record())  # 1 of 4 made today
    workers = [_race_worker(shared_url, 4, 4) for _ in range(2)]
    for worker in workers:  # start both together
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=120)[0].split("\n") for worker in workers]
    assert [w.returncode for w in workers] == [0, 0]
    lines = [line for out in outputs for line in out if line]
    reserved = [line.split()[1] for line in lines if line.startswith("reserved ")]
    assert (len(reserved), lines.count("refused")) == (3, 5)
    assert store.held(ALICE) == 3 and limits.allowance(store, ALICE, 4).left == 0


def test_saving_against_a_reservation_converts_it_in_the_same_step(engine):
    """Each image saved against a reservation turns one place into a record: used today
    stays the same, the reservation shrinks, then disappears; a regeneration converts too."""
    store = current_store()
    reservation = store.reserve(ALICE, 3, 3, _today())
    assert limits.allowance(store, ALICE, 3).used == 3
    store.save(_image(1), _record(seed=1), reservation=reservation)
    assert store.usage(ALICE, _today()) == (1, 2)
    saved = store.save(_image(2), _record(seed=2), reservation=reservation)
    store.note_regenerate(ALICE, saved, reservation=reservation)
    assert store.usage(ALICE, _today()) == (3, 0)
    assert not store.release(reservation)  # nothing left to give back
    with pytest.raises(ValueError, match="own owner"):
        store.save(_image(3), _record(owner=BOB), reservation=reservation)


def test_release_gives_places_back_and_a_crashed_request_expires(engine):
    """A failed or stopped request releases its places; one nobody releases (a crashed
    process) stops counting once it expires."""
    store = current_store()
    held = store.reserve(ALICE, 2, 2, _today())
    with pytest.raises(limits.LimitReached, match="you have 0 left|your 2 images for today"):
        store.reserve(ALICE, 1, 2, _today())
    assert store.release(held) and store.held(ALICE) == 0
    store.reserve(ALICE, 2, 2, _today(), now=time.time() - 600, hold_seconds=60)  # crashed
    assert store.held(ALICE) == 0
    assert store.reserve(ALICE, 2, 2, _today()).places == 2


def test_left_today_counts_places_being_made(engine):
    """The generator's "left today" counts reservations, and says they are being made."""
    store = current_store()
    store.save(_image(), _record())
    store.reserve(ALICE, 2, 5, _today())
    allowance = limits.allowance(store, ALICE, 5)
    assert (allowance.used, allowance.held, allowance.left) == (3, 2, 2)
    assert allowance.summary().startswith("2 of 5 images left today (2 being made now)")


class _Stopped(BaseException):
    """What Streamlit's stop or rerun looks like to the code it interrupts."""


def test_holding_releases_when_the_request_fails_or_is_stopped(engine):
    """limits.holding: the places are held inside, and given back however it ends; with no
    limit nothing is reserved."""
    store = current_store()
    with pytest.raises(_Stopped), limits.holding(store, ALICE, 3, 2) as reservation:
        assert reservation.places == 2 and store.held(ALICE) == 2
        raise _Stopped
    assert store.held(ALICE) == 0
    with limits.holding(store, ALICE, 3, 1) as reservation:
        store.save(_image(), _record(), reservation=reservation)
    assert store.usage(ALICE, _today()) == (1, 0)
    with limits.holding(store, ALICE, 0, 9) as unlimited:
        assert unlimited is None
