"""The daily image limit (`SD_DAILY_LIMIT`): images per user per day, counted from the history.

Counting the history store (not a counter in memory) makes the limit hold across restarts
and across replicas sharing one database (`SD_HISTORY_URL`). A day is a UTC day: the
allowance comes back at 00:00 UTC. Deleted images still count (they were spent). Without
sign-in every visitor is the one local user, so the limit is then a cap for the whole app:
what stops anyone with a Community Cloud link from spending the owner's credits.

A request holds its places before it generates (`reserve`, or `holding` around the whole
request): the store counts and reserves in one locked transaction, so tabs or replicas
clicking at once cannot together go over the limit. Places held by running requests
count as used in "left today".
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.generation import GenerationError

DAY = 86_400.0
# How long a reservation holds its places when nobody saves or releases them (a crashed
# process): far longer than a request runs, short enough not to cost a whole day.
HOLD_SECONDS = 2 * 3600.0


class LimitReached(GenerationError):  # noqa: N818 - reads as what happened
    """This request would go over the visitor's daily limit; the message says when it resets.

    `allowance` (when known) holds the numbers: the limit, what is used (made today plus
    held by requests still running) and what is held; `wanted` what this request asked.
    """

    def __init__(
        self, message: str, *, allowance: Allowance | None = None, wanted: int | None = None
    ) -> None:
        super().__init__(message)
        self.allowance = allowance
        self.wanted = wanted


@dataclass(frozen=True)
class Allowance:
    """How many images `owner` may still make today."""

    limit: int  # 0 = unlimited
    used: int  # made today (saved, deleted or not, and regenerated) plus `held`
    resets_at: float  # Unix time of the next 00:00 UTC
    held: int = 0  # places reserved by requests still running (part of `used`)

    @property
    def unlimited(self) -> bool:
        return self.limit <= 0

    @property
    def left(self) -> int:
        return max(self.limit - self.used, 0)

    def resets_in(self, now: float | None = None) -> str:
        """ "00:00 UTC (in 3 h 5 min)"."""
        seconds = max(self.resets_at - (time.time() if now is None else now), 0)
        hours, minutes = int(seconds // 3600), int(seconds % 3600 // 60)
        span = f"{hours} h {minutes} min" if hours else f"{max(minutes, 1)} min"
        return f"00:00 UTC (in {span})"

    def summary(self, now: float | None = None) -> str:
        """One line for the generator: what is left today and when it resets."""
        images = "image" if self.limit == 1 else "images"
        running = f" ({self.held} being made now)" if self.held else ""
        return (
            f"{self.left} of {self.limit} {images} left today{running} · "
            f"resets {self.resets_in(now)}"
        )

    def check(self, wanted: int, now: float | None = None) -> None:
        """Raise `LimitReached` when `wanted` more images would go over the limit."""
        if self.unlimited or wanted <= self.left:
            return
        running = (
            f"; {self.held} {'is' if self.held == 1 else 'are'} still being made in another "
            "tab or request"
            if self.held
            else ""
        )
        if self.left == 0:
            raise LimitReached(
                f"You have {'made or started' if self.held else 'made'} your {self.limit} "
                f"image{'s' if self.limit != 1 else ''} for today (the daily limit{running}). "
                f"Generate works again at {self.resets_in(now)}.",
                allowance=self,
                wanted=wanted,
            )
        raise LimitReached(
            f"This asks for {wanted} images but you have {self.left} left today (the daily "
            f"limit is {self.limit}{running}). Set Images to {self.left} or fewer, or wait "
            f"until {self.resets_in(now)}.",
            allowance=self,
            wanted=wanted,
        )


def day_start(now: float) -> float:
    """00:00 UTC of the day holding `now`."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def allowance(store: Any, owner: str, limit: int, *, now: float | None = None) -> Allowance:
    """Count `owner`'s images since 00:00 UTC in `store` (a HistoryStore) against `limit`,
    with the places running requests hold counted as used.

    Raise the store's `HistoryError` when it cannot be read: the caller refuses to generate
    rather than let a broken database lift the limit.
    """
    now = time.time() if now is None else now
    start = day_start(now)
    if limit <= 0:
        return Allowance(limit=0, used=0, resets_at=start + DAY)
    made, held = store.usage(owner, start, now=now)
    return Allowance(limit=limit, used=made + held, held=held, resets_at=start + DAY)


def reserve(
    store: Any,
    owner: str,
    limit: int,
    wanted: int,
    *,
    now: float | None = None,
    hold_seconds: float = HOLD_SECONDS,
) -> Any:
    """Hold `wanted` of `owner`'s places for today in `store`; return the reservation, or
    None when there is no limit (`limit` 0).

    The store counts and reserves in one locked transaction (all processes sharing the
    database included), so only requests that fit get a reservation. Raise `LimitReached`
    (message for the page; `.allowance` and `.wanted` hold the numbers) when it does not
    fit, or the store's `HistoryError` when the history cannot be written (fail closed).

    The intended call sequence, for generate-and-keep::

        reservation = limits.reserve(store, visitor.id, settings.daily_limit, request.num_images)
        try:
            result = backend.generate(request)          # may raise, or be stopped
            kept = history.keep_result(                  # each saved image converts a place
                result, backend=backend, target=settings, session_id=session,
                owner=visitor.id, reservation=reservation,
            )
        finally:
            limits.release(store, reservation)           # places no image was saved for

    or, the same with a context manager (the `finally` also runs when Streamlit stops or
    reruns the script)::

        with limits.holding(store, visitor.id, settings.daily_limit, request.num_images) as r:
            result = backend.generate(request)
            kept = history.keep_result(result, ..., reservation=r)

    Regenerate & verify holds one place and converts it with
    `store.note_regenerate(visitor.id, record, reservation=r)` after the image is made.
    An image that was made but could not be saved gives its place back on release (as
    before reservations: only saved images and regenerations count).
    """
    if limit <= 0:
        return None
    now = time.time() if now is None else now
    return store.reserve(owner, wanted, limit, day_start(now), now=now, hold_seconds=hold_seconds)


def release(store: Any, reservation: Any) -> None:
    """Give back what `reservation` still holds (None: nothing to do). Never raises: a
    reservation that cannot be released now ends by itself after its hold time."""
    if reservation is not None:
        store.release(reservation)


@contextlib.contextmanager
def holding(
    store: Any, owner: str, limit: int, wanted: int, *, now: float | None = None
) -> Iterator[Any]:
    """`reserve` on entry, `release` on exit, whatever happens in between (see `reserve`)."""
    reservation = reserve(store, owner, limit, wanted, now=now)
    try:
        yield reservation
    finally:
        release(store, reservation)
