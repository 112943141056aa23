"""The daily allowance (SD_DAILY_LIMIT): asked before a click (`check_allowance`) and held
for the whole of an accepted request (`hold_allowance`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.auth import Visitor
    from core.limits import Allowance, LimitReached
    from core.settings import Settings


@dataclass(frozen=True)
class AllowanceCheck:
    """Today's allowance and, when the images asked for may not be made, why not."""

    allowance: Allowance | None = None  # None: no limit, or it could not be counted
    problem: str | None = None  # why not, and when it resets (server paths not hidden yet)

    @property
    def allowed(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Hold:
    """The places one accepted request holds under the daily limit, or why it was refused.

    `reservation` goes to `history.keep_result(..., reservation=)` (each saved image turns
    one place into a record) or `store.note_regenerate(..., reservation=)`; places left
    when the `hold_allowance` block ends are given back. Both are None without a limit.
    """

    problem: str | None = None  # refused: nothing is held (server paths not hidden yet)
    reservation: Any = None  # a `core.history.Reservation`, or None without a limit
    store: Any = None  # the `HistoryStore` holding it

    @property
    def allowed(self) -> bool:
        return self.problem is None


def check_allowance(settings: Settings, visitor: Visitor, *, wanted: int = 1) -> AllowanceCheck:
    """Whether `visitor` may make `wanted` more images today under SD_DAILY_LIMIT.

    What the page shows before a click ("2 of 5 images left today"); places held by
    requests still running count as used. Fails closed: a history that cannot be read
    does not lift the limit. Holding the places is `hold_allowance`'s job, at the click.
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


@contextlib.contextmanager
def hold_allowance(
    settings: Settings,
    visitor: Visitor,
    *,
    wanted: int,
    refusal: Callable[[LimitReached], str] = str,
) -> Iterator[Hold]:
    """Hold `wanted` of `visitor`'s places for today while the block runs; give back on exit
    whatever no saved image (or noted regeneration) took.

    The store counts and reserves in one locked transaction, so tabs, processes and
    replicas sharing one history clicking at once never together go over SD_DAILY_LIMIT.
    Every request that makes images — on this machine or a remote service, whose calls are
    what the limit protects — runs inside one::

        with hold_allowance(settings, visitor, wanted=request.num_images) as hold:
            if not hold.allowed:
                return refuse(hold.problem)           # nothing was held
            result = backend.generate(request)        # may fail, or be stopped
            history.keep_result(result, ..., reservation=hold.reservation)

    The give-back runs in `finally`, so a failure, a refusal further on (a full queue)
    and Streamlit's Stop or rerun (a BaseException) all release. Fails closed: a history
    that cannot be written refuses with the reason. Without a limit nothing is opened or held.
    `refusal` words a refusal over the limit (a grid says its cells).
    """
    if settings.daily_limit <= 0:
        yield Hold()
        return
    from core import history, limits

    store = None
    try:
        store = history.open_store(settings)
        reservation = limits.reserve(store, visitor.id, settings.daily_limit, wanted)
    except limits.LimitReached as exc:
        yield Hold(problem=refusal(exc))
        return
    except history.HistoryError as exc:
        # A read-only history's refusal already says that nothing was generated, and why.
        read_only = store is not None and store.read_only is not None
        yield Hold(
            problem=str(exc)
            if read_only
            else f"The daily limit cannot be held, so nothing was generated: {exc}"
        )
        return
    try:
        yield Hold(reservation=reservation, store=store)
    finally:
        limits.release(store, reservation)
