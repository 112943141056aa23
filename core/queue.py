"""A process-wide, first-come-first-served lock for the one shared pipeline.

Two threads calling one `StableDiffusion3Pipeline` corrupt its scheduler and tokenizer
state, so every generation holds this lock. Waiters see their place in the queue, and a
waiter that gives up (Streamlit's stop/rerun arrive as exceptions at any `st.*` call,
including inside `on_wait`) leaves the queue in `finally`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class GenerationQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[object] = []
        self._holder: object | None = None

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._holder is not None

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def _ahead(self, token: object) -> int | None:
        """Return how many are ahead of `token`, or None once it holds the lock."""
        if self._holder is None and self._waiting[0] is token:
            self._waiting.pop(0)
            self._holder = token
            return None
        return self._waiting.index(token) + (self._holder is not None)

    @contextmanager
    def slot(
        self, on_wait: Callable[[int], None] | None = None, poll: float = 0.25
    ) -> Iterator[None]:
        """Hold the lock for the block; call `on_wait(ahead)` every `poll` s while queued."""
        token = object()
        with self._cond:
            self._waiting.append(token)
        try:
            while True:
                with self._cond:
                    ahead = self._ahead(token)
                if ahead is None:
                    break
                if on_wait is not None:
                    on_wait(ahead)  # outside the lock: it may run Streamlit code
                with self._cond:
                    if self._ahead(token) is None:
                        break
                    self._cond.wait(poll)
            yield
        finally:
            with self._cond:
                if self._holder is token:
                    self._holder = None
                elif token in self._waiting:
                    self._waiting.remove(token)
                self._cond.notify_all()
