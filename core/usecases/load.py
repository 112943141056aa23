"""Loading the model before a generation, or on the Hardware page's Load model now."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from core.device import DeviceError
from core.generation import Backend, GenerationError, LoadCancelled

POLL_SECONDS = 0.25  # how often a running load is watched (progress, sidebar)


@dataclass(frozen=True)
class LoadOutcome:
    """How waiting for the model ended: the load's seconds, or why it failed."""

    seconds: float = 0.0  # the load's own time (0 when there was nothing to load)
    error: str | None = None  # "The model could not be loaded. …" (server paths not hidden)

    @property
    def ok(self) -> bool:
        return self.error is None


def load_model(
    backend: Backend,
    *,
    on_wait: Callable[[], None] | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> LoadOutcome:
    """Load the model in the background (or join the load that runs), calling `on_wait`
    every `poll_seconds` until it ends. Failures we can explain come back as `error`."""
    future = backend.load_async()
    while not future.done():
        if on_wait is not None:
            on_wait()
        time.sleep(poll_seconds)
    try:
        future.result()
    except LoadCancelled as exc:  # someone pressed Cancel: not a failure, nothing to fix
        return LoadOutcome(error=str(exc))
    except (GenerationError, DeviceError) as exc:
        return LoadOutcome(error=f"The model could not be loaded. {exc}")
    facts = backend.loaded_facts
    return LoadOutcome(seconds=facts.load_seconds if facts is not None else 0.0)


def ready_to_run(
    backend: Backend,
    load: Callable[[Backend], LoadOutcome],
    on_start: Callable[[], None] | None,
) -> LoadOutcome:
    """Make the model ready for a run: `load` waits for it when it is not (nothing to load:
    0 s), then `on_start` runs. A failed load comes back before `on_start`."""
    loaded = LoadOutcome() if backend.state.ready else load(backend)
    if loaded.ok and on_start is not None:
        on_start()
    return loaded
