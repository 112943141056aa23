"""The fair queue: round robin between users, a per-user limit, places, admin cancel."""

from __future__ import annotations

import threading
import time

import pytest

from core.generation import GenerationRequest, GenerationStopped
from core.queue import GenerationQueue, QueueCancelled, QueueFull, fair_slot

from .conftest import SMALL


def _wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Runner:
    """Threads that each take one turn on the queue as a user and log the order of turns."""

    def __init__(self, queue: GenerationQueue) -> None:
        self.queue = queue
        self.order: list[str] = []
        self.errors: dict[str, BaseException] = {}
        self.places: dict[str, list[int]] = {}
        self.threads: list[threading.Thread] = []

    def join_as(self, user: str, name: str) -> None:
        before = self.queue.waiting

        def run() -> None:
            try:
                with self.queue.slot(
                    lambda ahead: self.places.setdefault(name, []).append(ahead),
                    poll=0.01,
                    user=user,
                ):
                    self.order.append(name)
            except BaseException as exc:  # recorded for the test to check
                self.errors[name] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)
        # Joined (or refused) before the next one arrives, so arrival order is known.
        _wait_until(lambda: self.queue.waiting > before or name in self.errors)

    def finish(self) -> None:
        for thread in self.threads:
            thread.join(10)


def test_round_robin_between_users_not_first_come_first_served():
    """A's three clicks and B's one alternate: A1, B1, A2, A3 (not A1, A2, A3, B1)."""
    queue = GenerationQueue(max_waiting=5)
    runner = Runner(queue)
    with queue.slot(user="x@example.com"):  # someone else is generating
        for name in ("A1", "A2", "A3"):
            runner.join_as("a@example.com", name)
        runner.join_as("b@example.com", "B1")
        assert [e.user for e in queue.entries()][1:] == ["a@example.com", "b@example.com"] + [
            "a@example.com"
        ] * 2
    runner.finish()
    assert runner.order == ["A1", "B1", "A2", "A3"]
    assert not queue.busy and queue.waiting == 0


def test_a_user_who_just_ran_goes_behind_the_others():
    """After A's turn, B and C (waiting) run before A's next request."""
    queue = GenerationQueue(max_waiting=5)
    runner = Runner(queue)
    with queue.slot(user="a@example.com"):  # A is generating now
        runner.join_as("a@example.com", "A2")
        runner.join_as("b@example.com", "B1")
        runner.join_as("c@example.com", "C1")
    runner.finish()
    assert runner.order == ["B1", "C1", "A2"]


def test_third_waiting_request_is_refused_with_the_limit():
    """With the default limit of 2, a third waiting request gets "you already have 2 waiting"."""
    queue = GenerationQueue()
    runner = Runner(queue)
    with queue.slot(user="x@example.com"):
        runner.join_as("a@example.com", "A1")
        runner.join_as("a@example.com", "A2")
        third = queue.slot(user="a@example.com")
        with pytest.raises(QueueFull, match="You already have 2 waiting"), third:
            pytest.fail("a third request must not get the slot")
        runner.join_as("b@example.com", "B1")  # another user is not affected
    runner.finish()
    assert sorted(runner.order) == ["A1", "A2", "B1"] and not runner.errors


def test_the_limit_is_read_at_each_join():
    """A callable limit (the setting) applies without rebuilding the queue."""
    limit = [1]
    queue = GenerationQueue(max_waiting=lambda: limit[0])
    runner = Runner(queue)
    with queue.slot(user="x@example.com"):
        runner.join_as("a@example.com", "A1")
        with pytest.raises(QueueFull, match="limit is 1"), queue.slot(user="a@example.com"):
            pass
        limit[0] = 2
        runner.join_as("a@example.com", "A2")
    runner.finish()
    assert runner.order == ["A1", "A2"]


def test_each_waiter_is_told_its_place():
    """Waiters see how many run before them, and the place shrinks as turns pass."""
    queue = GenerationQueue(max_waiting=5)
    runner = Runner(queue)
    with queue.slot(user="x@example.com"):
        runner.join_as("a@example.com", "A1")
        runner.join_as("b@example.com", "B1")
        _wait_until(lambda: "B1" in runner.places and "A1" in runner.places)
    runner.finish()
    assert runner.places["A1"][0] == 1  # only the running request before it
    assert runner.places["B1"][0] == 2


def test_admin_sees_who_what_and_since_when_and_cancels_a_waiter():
    """entries() lists running and waiting with user, size and time; cancel ends the wait."""
    queue = GenerationQueue()
    runner = Runner(queue)
    with queue.slot(user="x@example.com", label="1 × 512×512, 2 steps"):
        runner.join_as("a@example.com", "A1")
        running, waiting = queue.entries()
        assert (running.running, running.user, running.label) == (
            True,
            "x@example.com",
            "1 × 512×512, 2 steps",
        )
        assert (waiting.running, waiting.place, waiting.user) == (False, 1, "a@example.com")
        assert abs(waiting.since - time.time()) < 10
        assert queue.cancel(waiting.id, by="admin@example.com")
        assert not queue.cancel(waiting.id, by="admin@example.com")  # already gone
        runner.finish()
    assert runner.order == []
    assert isinstance(runner.errors["A1"], QueueCancelled)
    assert "cancelled" in str(runner.errors["A1"])
    assert queue.entries() == [] and not queue.busy


def test_a_waiter_that_gives_up_leaves_the_queue():
    """An exception inside on_wait (Streamlit's stop) removes the waiter in finally."""
    queue = GenerationQueue()

    class Stop(BaseException):
        pass

    def give_up(_ahead: int) -> None:
        raise Stop

    with queue.slot(user="x@example.com"):
        with pytest.raises(Stop), queue.slot(give_up, user="a@example.com"):
            pass
        assert queue.waiting == 0
    assert not queue.busy


def test_cancelling_the_running_request_stops_it_with_the_message():
    """fair_slot's stop check turns true on cancel, and the stop leaves as QueueCancelled."""
    queue = GenerationQueue()
    request = GenerationRequest(prompt="x", seed=1, **SMALL)
    turn = fair_slot(queue, request, "a@example.com", None, None)
    with pytest.raises(QueueCancelled, match="An admin cancelled"), turn as should_stop:
        (entry,) = queue.entries()
        assert entry.label == "1 × 512×512, 2 steps" and not should_stop()
        queue.cancel(entry.id, by="admin@example.com")
        assert should_stop()
        raise GenerationStopped(1, 2)  # what the step callback raises
    assert not queue.busy


def test_user_stop_is_not_reported_as_a_cancel():
    """The caller's own Stop still leaves as GenerationStopped."""
    queue = GenerationQueue()
    request = GenerationRequest(prompt="x", seed=1, **SMALL)
    turn = fair_slot(queue, request, "a@example.com", None, lambda: True)
    with pytest.raises(GenerationStopped), turn as should_stop:
        assert should_stop()
        raise GenerationStopped(1, 2)


def test_local_backend_shares_the_real_pipeline_fairly_and_refuses_a_third_wait():
    """On the tiny SD3 pipeline: B's one request runs before A's second; A's third is refused."""
    from core.local import LocalBackend

    backend = LocalBackend(model="demo", dtype="float32", max_queued_per_user=2)
    backend.ensure_loaded()
    done: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def generate(user: str, seed: int) -> None:
        try:
            result = backend.generate(GenerationRequest(prompt="x", seed=seed, **SMALL), user=user)
            done.append((user, result.seeds[0]))
        except BaseException as exc:  # checked below
            errors.append(exc)

    threads = []
    with backend.queue.slot(user="someone@example.com"):
        for user, seed in (("a@example.com", 1), ("a@example.com", 2), ("b@example.com", 3)):
            before = backend.queue.waiting
            threads.append(threading.Thread(target=generate, args=(user, seed)))
            threads[-1].start()
            _wait_until(lambda before=before: backend.queue.waiting > before)
        with pytest.raises(QueueFull, match="You already have 2 waiting"):
            backend.generate(GenerationRequest(prompt="x", seed=4, **SMALL), user="a@example.com")
    for thread in threads:
        thread.join(60)
    assert not errors
    assert done == [("a@example.com", 1), ("b@example.com", 3), ("a@example.com", 2)]


def test_rounds_take_one_request_per_user_in_turn():
    """A×3, B×1, C×2 waiting: A1, B1, C1, A2, C2, A3 — and entries() shows that order."""
    queue = GenerationQueue(max_waiting=5)
    runner = Runner(queue)
    with queue.slot(user="x@example.com"):
        for user, name in (("a", "A1"), ("a", "A2"), ("b", "B1"), ("c", "C1"), ("a", "A3")):
            runner.join_as(user, name)
        runner.join_as("c", "C2")
        assert [(e.user, e.place) for e in queue.entries()[1:]] == [
            ("a", 1),
            ("b", 2),
            ("c", 3),
            ("a", 4),
            ("c", 5),
            ("a", 6),
        ]
    runner.finish()
    assert runner.order == ["A1", "B1", "C1", "A2", "C2", "A3"]
