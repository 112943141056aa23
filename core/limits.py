"""The daily image limit (`SD_DAILY_LIMIT`): images per user per day, counted from the history.

Counting the history store (not a counter in memory) makes the limit hold across restarts
and across replicas sharing one database (`SD_HISTORY_URL`). A day is a UTC day: the
allowance comes back at 00:00 UTC. Deleted images still count (they were spent). Without
sign-in every visitor is the one local user, so the limit is then a cap for the whole app:
what stops anyone with a Community Cloud link from spending the owner's credits.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Any

from core.generation import GenerationError

DAY = 86_400.0


class LimitReached(GenerationError):  # noqa: N818 - reads as what happened
    """This request would go over the visitor's daily limit; the message says when it resets."""


@dataclass(frozen=True)
class Allowance:
    """How many images `owner` may still make today."""

    limit: int  # 0 = unlimited
    used: int
    resets_at: float  # Unix time of the next 00:00 UTC

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
        return f"{self.left} of {self.limit} {images} left today · resets {self.resets_in(now)}"

    def check(self, wanted: int, now: float | None = None) -> None:
        """Raise `LimitReached` when `wanted` more images would go over the limit."""
        if self.unlimited or wanted <= self.left:
            return
        if self.left == 0:
            raise LimitReached(
                f"You have made your {self.limit} image{'s' if self.limit != 1 else ''} for "
                "today (the daily limit). "
                f"Generate works again at {self.resets_in(now)}."
            )
        raise LimitReached(
            f"This asks for {wanted} images but you have {self.left} left today (the daily "
            f"limit is {self.limit}). Set Images to {self.left} or fewer, or wait until "
            f"{self.resets_in(now)}."
        )


def day_start(now: float) -> float:
    """00:00 UTC of the day holding `now`."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def allowance(store: Any, owner: str, limit: int, *, now: float | None = None) -> Allowance:
    """Count `owner`'s images since 00:00 UTC in `store` (a HistoryStore) against `limit`.

    Raise the store's `HistoryError` when it cannot be read: the caller refuses to generate
    rather than let a broken database lift the limit.
    """
    now = time.time() if now is None else now
    start = day_start(now)
    if limit <= 0:
        return Allowance(limit=0, used=0, resets_at=start + DAY)
    return Allowance(limit=limit, used=store.made_since(owner, start), resets_at=start + DAY)
