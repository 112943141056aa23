"""The daily allowance check (SD_DAILY_LIMIT), asked before a click and again at it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.auth import Visitor
    from core.limits import Allowance
    from core.settings import Settings


@dataclass(frozen=True)
class AllowanceCheck:
    """Today's allowance and, when the images asked for may not be made, why not."""

    allowance: Allowance | None = None  # None: no limit, or it could not be counted
    problem: str | None = None  # why not, and when it resets (server paths not hidden yet)

    @property
    def allowed(self) -> bool:
        return self.problem is None


def check_allowance(settings: Settings, visitor: Visitor, *, wanted: int = 1) -> AllowanceCheck:
    """Whether `visitor` may make `wanted` more images today under SD_DAILY_LIMIT.

    Fails closed: a history that cannot be read does not lift the limit.
    """
    if settings.daily_limit <= 0:
        return AllowanceCheck()
    from core import history, limits  # only apps with a limit pay for these imports here

    try:
        allowance = limits.allowance(history.open_store(settings), visitor.id, settings.daily_limit)
        allowance.check(wanted)
    except limits.LimitReached as exc:
        return AllowanceCheck(allowance, str(exc))
    except history.HistoryError as exc:
        return AllowanceCheck(
            None, f"The daily limit cannot be counted, so nothing can be generated now: {exc}"
        )
    return AllowanceCheck(allowance)
