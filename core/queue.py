"""A process-wide, fair queue for the one shared pipeline.

Two threads calling one `StableDiffusion3Pipeline` corrupt its scheduler and tokenizer
state, so every generation holds this queue's slot. Fairness: when the slot frees, the next
holder is the head request of the waiting user who was served least recently (round robin
between users), so one person clicking Generate four times cannot hold everyone else back.
Each user may have at most `max_waiting` requests waiting (`SD_MAX_QUEUED_PER_USER`); one
more is refused with `QueueFull`. Waiters see their place; admins see the whole queue
(`entries()`) and can `cancel()` any entry: a cancelled waiter leaves with `QueueCancelled`,
a cancelled running request is stopped at its next step (the backend checks `cancelled`).

A waiter that gives up (Streamlit's stop/rerun arrive as exceptions at any `st.*` call,
including inside `on_wait`) leaves the queue in `finally`; `on_wait` runs outside the lock.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from core.generation import GenerationError, GenerationStopped

SYSTEM_USER = ""  # the app's own work (unloading the model): never limited
_ids = itertools.count(1)
CANCELLED_MESSAGE = (
    "An admin cancelled this request to free the model for others. Nothing was kept; "
    "Generate to try again."
)


class QueueFull(GenerationError):  # noqa: N818 - reads as what happened: the queue is full
    """This user already has the most waiting requests allowed."""


class QueueCancelled(GenerationError):  # noqa: N818 - reads as what happened
    """An admin cancelled this request."""


@dataclass(eq=False)
class Entry:
    """One request in the queue (mutable: `cancelled_by` is set by an admin)."""

    user: str
    label: str
    since: float = field(default_factory=time.time)  # wall clock, for "waiting since"
    id: int = field(default_factory=lambda: next(_ids))
    cancelled_by: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancelled_by is not None


@dataclass(frozen=True)
class EntryView:
    """What an admin sees of one entry: who, what, since when, running or its place."""

    id: int
    user: str
    label: str
    since: float
    running: bool
    place: int  # 0 = running, 1 = next, …


def _as_limit(limit: int | Callable[[], int]) -> Callable[[], int]:
    return limit if callable(limit) else (lambda: limit)


class GenerationQueue:
    def __init__(self, max_waiting: int | Callable[[], int] = 2) -> None:
        """`max_waiting`: waiting requests allowed per user, or a function read at each join."""
        self._cond = threading.Condition()
        self._waiting: list[Entry] = []  # in arrival order
        self._holder: Entry | None = None
        self._last_served: dict[str, int] = {}  # user → turn number when last given the slot
        self._turns = itertools.count(1)
        self._max_waiting = _as_limit(max_waiting)
        self._order_cache: list[Entry] | None = None

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._holder is not None

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    # --- order ---------------------------------------------------------------------------
    def _order(self) -> list[Entry]:
        """The waiting entries in the order they will run (call with the lock held).

        Round robin: users take turns in the order of when they were last served (never
        served first; ties go to whoever's first waiting request arrived first), one request
        per user per round, each user's requests in arrival order. O(n log n), and cached
        until the queue changes: every waiter asks for its place on each poll.
        """
        if self._order_cache is None:
            per_user: dict[str, list[Entry]] = {}
            first_arrival: dict[str, int] = {}
            for index, entry in enumerate(self._waiting):
                per_user.setdefault(entry.user, []).append(entry)
                first_arrival.setdefault(entry.user, index)
            users = sorted(per_user, key=lambda u: (self._last_served.get(u, 0), first_arrival[u]))
            rounds = max((len(q) for q in per_user.values()), default=0)
            self._order_cache = [
                per_user[user][turn]
                for turn in range(rounds)
                for user in users
                if turn < len(per_user[user])
            ]
        return self._order_cache

    def _changed(self) -> None:
        self._order_cache = None

    def _ahead(self, entry: Entry) -> int | None:
        """Return how many run before `entry`, or None once it holds the slot."""
        order = self._order()
        if self._holder is None and order[0] is entry:
            self._waiting.remove(entry)
            self._holder = entry
            self._last_served[entry.user] = next(self._turns)
            self._changed()
            return None
        return order.index(entry) + (self._holder is not None)

    # --- joining -------------------------------------------------------------------------
    def _join(self, user: str, label: str) -> Entry:
        with self._cond:
            if user != SYSTEM_USER:
                limit = self._max_waiting()
                mine = sum(1 for e in self._waiting if e.user == user)
                if mine >= limit:
                    raise QueueFull(
                        f"You already have {mine} waiting (the limit is {limit} per person). "
                        "Wait for one of them to start, then Generate again."
                    )
            entry = Entry(user=user, label=label)
            self._waiting.append(entry)
            self._changed()
            return entry

    @contextmanager
    def slot(
        self,
        on_wait: Callable[[int], None] | None = None,
        poll: float = 0.25,
        *,
        user: str = SYSTEM_USER,
        label: str = "",
    ) -> Iterator[Entry]:
        """Hold the slot for the block; call `on_wait(ahead)` every `poll` s while queued.

        Raise `QueueFull` when `user` already has the most waiting requests allowed, and
        `QueueCancelled` when an admin cancels this request while it waits. Yield the entry
        (its `cancelled` turns true if an admin cancels it while it runs).
        """
        entry = self._join(user, label)
        try:
            while True:
                with self._cond:
                    ahead = None if entry.cancelled else self._ahead(entry)
                if entry.cancelled:
                    raise QueueCancelled(CANCELLED_MESSAGE)
                if ahead is None:
                    break
                if on_wait is not None:
                    on_wait(ahead)  # outside the lock: it may run Streamlit code
                with self._cond:
                    if not entry.cancelled and self._ahead(entry) is None:
                        break
                    self._cond.wait(poll)
            yield entry
        finally:
            with self._cond:
                if self._holder is entry:
                    self._holder = None
                elif entry in self._waiting:
                    self._waiting.remove(entry)
                    self._changed()
                self._cond.notify_all()

    # --- admin ---------------------------------------------------------------------------
    def entries(self) -> list[EntryView]:
        """The running request (if any) and the waiting ones, in the order they will run."""
        with self._cond:
            views = []
            if self._holder is not None:
                h = self._holder
                views.append(EntryView(h.id, h.user, h.label, h.since, True, 0))
            for place, e in enumerate(self._order(), start=1):
                views.append(EntryView(e.id, e.user, e.label, e.since, False, place))
            return views

    def cancel(self, entry_id: int, *, by: str) -> bool:
        """Cancel a waiting or running entry; return whether it was still there."""
        with self._cond:
            for entry in [*self._waiting, *([self._holder] if self._holder else [])]:
                if entry.id == entry_id and not entry.cancelled:
                    entry.cancelled_by = by
                    if entry in self._waiting:
                        self._waiting.remove(entry)
                        self._changed()
                    self._cond.notify_all()
                    return True
            return False


def describe_request(request: object) -> str:
    """ "4 × 1024×1024, 40 steps": what an admin sees of a queued request."""
    n = getattr(request, "num_images", 1)
    w, h = getattr(request, "width", "?"), getattr(request, "height", "?")
    return f"{n} × {w}×{h}, {getattr(request, 'num_inference_steps', '?')} steps"


@contextmanager
def fair_slot(
    queue: GenerationQueue,
    request: object,
    user: str,
    on_wait: Callable[[int], None] | None,
    should_stop: Callable[[], bool] | None,
    *,
    label: str | None = None,
) -> Iterator[Callable[[], bool]]:
    """A backend's turn: hold `queue`'s slot as `user`; yield the stop check to run with.

    The check is true when the caller asks to stop or an admin cancels the running request;
    a stop caused by that cancel leaves the block as `QueueCancelled`, with its message.
    `label` is what admins see of the entry (default: `describe_request(request)`).
    """
    label = describe_request(request) if label is None else label
    with queue.slot(on_wait, user=user, label=label) as entry:

        def stop() -> bool:
            return entry.cancelled or (should_stop is not None and should_stop())

        try:
            yield stop
        except GenerationStopped:
            if entry.cancelled:
                raise QueueCancelled(CANCELLED_MESSAGE) from None
            raise
