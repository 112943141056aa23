"""Generate and keep: the Generate click, from holding the allowance to the result shown."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.device import DeviceError
from core.generation import (
    Backend,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    Progress,
    ProgressCallback,
)
from core.usecases.allowance import hold_allowance
from core.usecases.load import LoadOutcome, load_model, ready_to_run

if TYPE_CHECKING:
    from core.auth import Visitor
    from core.settings import Settings


@dataclass(frozen=True, kw_only=True)
class Generated:
    """What the generator shows for one Generate click (and the session strip again)."""

    pngs: tuple[bytes, ...]  # one per image, carrying its settings (the stored file when kept)
    sha256: tuple[str, ...]  # of each image's pixels
    seeds: tuple[int, ...]
    prompt: str
    size: str  # "512×512"
    steps: int
    guidance: float
    load_seconds: float
    queue_seconds: float
    generation_seconds: float
    history_error: str | None  # which images the history did not keep, and why
    backend: str  # "local" or "remote"
    details: Mapping[str, str] = field(default_factory=dict)  # who made it (BackendFacts)
    # Set when shown again from the session strip (`core.recent.recall`):
    downloadable: tuple[bool, ...] = ()  # per image; empty: every image is
    recalled: str | None = None  # the strip entry's id
    form_values: Mapping[str, Any] | None = None  # the generator's values that remake it
    record_ids: tuple[str | None, ...] = ()  # the seed-history id per image (None: not kept)


@dataclass(frozen=True)
class GenerateOutcome:
    """How a Generate click ended: `shown` when images were made, else `problem`."""

    shown: Generated | None = None
    problem: str | None = None  # our words, server paths not hidden yet
    failed_at: str | None = None  # "allowance", "load" or "generate" when `problem` is set
    record_ids: tuple[str | None, ...] = ()  # the history's id per image (None: not kept)
    thumbnail: bytes = b""  # the first image, small, for the session strip


def generate_and_keep(
    request: GenerationRequest,
    *,
    settings: Settings,
    visitor: Visitor,
    backend: Backend,
    session_id: str,
    load: Callable[[Backend], LoadOutcome] = load_model,
    on_start: Callable[[], None] | None = None,
    on_progress: ProgressCallback | None = None,
    preview: bool = False,
) -> GenerateOutcome:
    """Hold the allowance, load the model, generate, and keep every image in the history.

    The request's places under SD_DAILY_LIMIT are held from the click (atomically, in the
    history store, see `hold_allowance`) until its images are saved; whatever ends it
    early — a refusal, a failed load or generation, Streamlit's Stop — gives them back.
    `load` waits for the model when it is not ready (the page passes one that draws the
    load's progress); `on_start` runs once the model is ready, before the generation;
    `on_progress` gets each update (with a live preview when `preview` and the backend
    supports it). A refusal or a failure we can explain comes back as `problem`; anything
    a callback raises (Streamlit's Stop) goes through, and nothing is kept then. A storage
    fault never loses the images: each still has a PNG carrying its settings, and
    `history_error` says what was not kept.
    """
    # Held at the click: another tab or replica may be spending the same allowance now.
    with hold_allowance(settings, visitor, wanted=request.num_images) as hold:
        if not hold.allowed:
            return GenerateOutcome(problem=hold.problem, failed_at="allowance")
        loaded = ready_to_run(backend, load, on_start)
        if not loaded.ok:
            return GenerateOutcome(problem=loaded.error, failed_at="load")
        try:
            result = backend.generate(
                request,
                on_progress=on_progress,
                user=visitor.id,
                preview=preview and backend.supports_preview,
            )
        except (GenerationError, DeviceError) as exc:
            # Refused or failed with a message (a full queue, an admin's cancel…): not a Stop.
            return GenerateOutcome(problem=str(exc), failed_at="generate")
        if on_progress is not None:
            on_progress(Progress("saving", 0.0))
        return _keep(
            result,
            settings=settings,
            visitor=visitor,
            backend=backend,
            session_id=session_id,
            load_seconds=loaded.seconds,
            reservation=hold.reservation,
        )


def _keep(
    result: GenerationResult,
    *,
    settings: Settings,
    visitor: Visitor,
    backend: Backend,
    session_id: str,
    load_seconds: float,
    reservation: Any = None,
) -> GenerateOutcome:
    """Keep every image in the seed history (each saved one spends a place of
    `reservation`); say what the page shows."""
    from core import history  # the first generation pays for this import, not the first paint

    kept = history.keep_result(
        result,
        backend=backend,
        target=settings,
        session_id=session_id,
        owner=visitor.id,
        reservation=reservation,
    )
    request = result.request
    shown = Generated(
        pngs=tuple(kept.pngs),
        sha256=tuple(history.pixel_sha256(image) for image in result.images),
        seeds=tuple(result.seeds),
        prompt=request.prompt,
        size=f"{request.width}×{request.height}",
        steps=request.num_inference_steps,
        guidance=request.guidance_scale,
        load_seconds=load_seconds + result.load_seconds,
        queue_seconds=result.queue_seconds,
        generation_seconds=result.generation_seconds,
        history_error=kept.error,
        backend=result.backend,
        details=dict(result.details),
    )
    return GenerateOutcome(
        shown=shown,
        record_ids=tuple(record.id for record in kept.records),
        thumbnail=history.encode_thumbnail(result.images[0]),
    )
