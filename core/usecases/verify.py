"""Regenerate and verify: make a stored image again and compare it, pixel for pixel."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.device import DeviceError
from core.generation import Backend, GenerationError
from core.quantize import same_quantization
from core.usecases.allowance import hold_allowance

if TYPE_CHECKING:
    from core.auth import Visitor
    from core.history import HistoryRecord, HistoryStore, Verification
    from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyOutcome:
    """How Regenerate & verify ended, in the order the page tells it."""

    invalid: tuple[str, ...] = ()  # the record's settings the generator cannot use: nothing ran
    refused: str | None = None  # over the daily limit, or it could not be counted
    remote: bool = False  # a remote service made it or remakes it: pixels may differ
    differences: tuple[str, ...] = ()  # what differs from the setup that made the image
    error: str | None = None  # the load or the regeneration failed (server paths not hidden)
    verification: Verification | None = None  # the comparison, when it ran
    # Like with like: the record's quantization and the loaded model's
    # (core.quantize.same_quantization). When they differ, a pixel difference is expected
    # and is no reproducibility failure; `quantization` says so (or names the one shared).
    same_quantization: bool = True
    quantization: str = ""


def _no_step(_label: str) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


def regenerate_and_verify(
    store: HistoryStore,
    record: HistoryRecord,
    *,
    settings: Settings,
    visitor: Visitor,
    backend: Backend,
    step: Callable[[str], AbstractContextManager[Any]] = _no_step,
) -> VerifyOutcome:
    """Run `record`'s settings again on `backend` and compare with the stored image.

    Rows are outside input (an edited database, another app version): a record whose
    settings the generator cannot use is refused before anything runs. A regeneration is
    spent like any image: a place is held under the daily limit from the start (given back
    when nothing was made) and counted once the image is made. `step`
    wraps each long step with its label (the page passes a spinner).
    """
    from core import history

    problems = record.problems()
    if problems:
        return VerifyOutcome(invalid=tuple(problems))
    # One place held from the click, spent when the image is made, else given back.
    with hold_allowance(settings, visitor, wanted=1) as hold:
        if not hold.allowed:
            return VerifyOutcome(refused=hold.problem)
        remote, differences, same, quantization = False, (), True, ""
        try:
            with step("Loading the model…"):
                backend.ensure_loaded()
            now = history.environment(backend)
            differences = tuple(history.environment_differences(record, now))
            same, quantization = same_quantization(record.quantization, now["quantization"])
            remote = "remote" in (record.backend, backend.name)
            with step("Regenerating…"):
                verification = history.verify(store, record, backend)
        except (GenerationError, DeviceError) as exc:
            return VerifyOutcome(
                remote=remote,
                differences=differences,
                error=str(exc),
                same_quantization=same,
                quantization=quantization,
            )
        if settings.daily_limit:
            try:
                store.note_regenerate(visitor.id, record, reservation=hold.reservation)
            except history.HistoryError as exc:
                log.warning("regeneration not counted: %s", exc)
    return VerifyOutcome(
        remote=remote,
        differences=differences,
        verification=verification,
        same_quantization=same,
        quantization=quantization,
    )
