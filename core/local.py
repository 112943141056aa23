"""The local backend: a diffusers `StableDiffusion3Pipeline` on this machine."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from core.demo import DEMO_MODEL, build_demo_pipeline
from core.device import DeviceChoice, choose_device
from core.errors import explain_load_error, explain_local_path
from core.generation import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    GenerationStopped,
    Progress,
    ProgressCallback,
    StopCheck,
)
from core.queue import GenerationQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedPipeline:
    """A ready pipeline and the facts of how it was loaded."""

    pipe: Any
    model: str
    choice: DeviceChoice
    load_seconds: float

    @property
    def is_demo(self) -> bool:
        return self.model == DEMO_MODEL


def apply_memory_options(pipe: Any) -> None:
    """Turn on the VAE savings that act on SD3 (the pipeline itself has no such methods)."""
    pipe.vae.enable_slicing()
    pipe.vae.enable_tiling()


def _require_torch() -> None:
    """Explain the light install (no torch/diffusers) rather than fail on an import."""
    import importlib.util

    missing = [m for m in ("torch", "diffusers") if importlib.util.find_spec(m) is None]
    if missing:
        raise GenerationError(
            f"{' and '.join(missing)} not installed: this is the light install, which can "
            "only generate remotely. Set SD_BACKEND=remote with SD_REMOTE_URL or SD_PROVIDER "
            "(see docs/remote.md), or install the full app with `make install`."
        )


def load_pipeline(
    *, model: str, device: str = "auto", dtype: str = "auto", token: str | None = None
) -> LoadedPipeline:
    """Load the pipeline, move it to the device and enable the memory options.

    Raise `GenerationError` with the remedy for failures we can explain.
    """
    start = time.perf_counter()
    _require_torch()
    choice = choose_device(device, dtype)
    if model == DEMO_MODEL:
        pipe = build_demo_pipeline().to(dtype=choice.torch_dtype)
    else:
        problem = explain_local_path(model)
        if problem:
            raise GenerationError(problem)
        from diffusers import StableDiffusion3Pipeline

        try:
            pipe = StableDiffusion3Pipeline.from_pretrained(
                model, dtype=choice.torch_dtype, use_safetensors=True, token=token
            )
        except (OSError, ValueError, ConnectionError) as exc:
            message = explain_load_error(exc, model=model, has_token=bool(token))
            if message is None:
                raise
            raise GenerationError(message) from exc
    pipe.to(choice.device)
    apply_memory_options(pipe)
    pipe.set_progress_bar_config(disable=True)
    seconds = time.perf_counter() - start
    log.info("loaded %s on %s/%s in %.1f s", model, choice.device, choice.dtype, seconds)
    return LoadedPipeline(pipe=pipe, model=model, choice=choice, load_seconds=seconds)


def free_accelerator_memory() -> None:
    """Collect garbage and hand cached accelerator memory back."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()


def run_pipeline(
    pipe: Any,
    request: GenerationRequest,
    *,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    started: float | None = None,
) -> tuple[list[Any], list[float]]:
    """Make one image per seed with a CPU generator each, under `torch.inference_mode()`."""
    import torch

    started = time.perf_counter() if started is None else started
    total = request.num_inference_steps
    images, seconds = [], []
    for index, seed in enumerate(request.seeds):

        def on_step(_pipe: Any, step: int, _timestep: Any, _kwargs: dict, index=index) -> dict:
            if should_stop is not None and should_stop():
                raise GenerationStopped(step + 1, total)
            if on_progress is not None:
                elapsed = time.perf_counter() - started
                on_progress(
                    Progress(
                        "denoising",
                        elapsed,
                        image_index=index,
                        num_images=request.num_images,
                        step=step + 1,
                        total_steps=total,
                    )
                )
            return {}

        if should_stop is not None and should_stop():
            raise GenerationStopped(0, total)
        image_start = time.perf_counter()
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with torch.inference_mode():
            output = pipe(
                **request.pipeline_kwargs(), generator=generator, callback_on_step_end=on_step
            )
        images.append(output.images[0])
        seconds.append(time.perf_counter() - image_start)
    return images, seconds


class LocalBackend:
    """The shared pipeline of this process: loaded once, used by one generation at a time."""

    name = "local"

    def __init__(
        self,
        *,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        token_provider: Callable[[], str | None] = lambda: None,
        loader: Callable[..., LoadedPipeline] = load_pipeline,
    ) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self._token_provider = token_provider
        self._loader = loader
        self.queue = GenerationQueue()
        self._lock = threading.Lock()  # guards the fields below
        self._loaded: LoadedPipeline | None = None
        self._loading: Future[LoadedPipeline] | None = None
        self._loading_since: float | None = None
        self.last_load_error: str | None = None

    # --- loading -------------------------------------------------------------------------
    @property
    def loaded(self) -> LoadedPipeline | None:
        return self._loaded

    @property
    def state(self) -> str:
        """ "loaded", "loading" or "not loaded"."""
        with self._lock:
            if self._loaded is not None:
                return "loaded"
            return "loading" if self._loading is not None else "not loaded"

    @property
    def loading_elapsed(self) -> float:
        since = self._loading_since
        return 0.0 if since is None else time.perf_counter() - since

    def load_async(self) -> Future[LoadedPipeline]:
        """Start loading in a background thread, or join the load already running.

        Every session gets the same future, so the model loads once per process. A failed
        load is forgotten: the next call tries again.
        """
        with self._lock:
            if self._loaded is not None:
                done: Future[LoadedPipeline] = Future()
                done.set_result(self._loaded)
                return done
            if self._loading is not None:
                return self._loading
            future: Future[LoadedPipeline] = Future()
            self._loading, self._loading_since = future, time.perf_counter()
        threading.Thread(target=self._load, args=(future,), name="sd-load", daemon=True).start()
        return future

    def _load(self, future: Future[LoadedPipeline]) -> None:
        try:
            loaded = self._loader(
                model=self.model, device=self.device, dtype=self.dtype, token=self._token_provider()
            )
        except BaseException as exc:  # handed to every waiting session through the future
            with self._lock:
                self._loading = self._loading_since = None
                self.last_load_error = str(exc)
            future.set_exception(exc)
            return
        with self._lock:
            self._loaded, self._loading, self._loading_since = loaded, None, None
            self.last_load_error = None
        future.set_result(loaded)

    def ensure_loaded(self) -> LoadedPipeline:
        """Block until the pipeline is loaded; raise what the load raised."""
        return self.load_async().result()

    # --- generating ----------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> GenerationResult:
        """Generate the request's images in order; wait for the shared pipeline first."""
        import torch

        start = time.perf_counter()
        was_loaded = self._loaded is not None
        loaded = self.ensure_loaded()
        load_seconds = 0.0 if was_loaded else time.perf_counter() - start

        def on_wait(ahead: int) -> None:
            if on_progress is not None:
                on_progress(Progress("queued", time.perf_counter() - start, queue_position=ahead))

        with self.queue.slot(on_wait):
            queued_until = time.perf_counter()
            try:
                images, per_image = run_pipeline(
                    loaded.pipe,
                    request,
                    on_progress=on_progress,
                    should_stop=should_stop,
                    started=queued_until,
                )
            except torch.OutOfMemoryError:
                free_accelerator_memory()
                raise GenerationError(
                    f"Out of memory at {request.width}×{request.height} with "
                    f"{request.num_images} image(s). Try a smaller size or fewer images, or a "
                    "memory plan that offloads to the CPU (see the Hardware page)."
                ) from None
        done = time.perf_counter()
        return GenerationResult(
            request=request,
            images=tuple(images),
            seeds=request.seeds,
            queue_seconds=max(queued_until - start - load_seconds, 0.0),
            load_seconds=load_seconds,
            generation_seconds=done - queued_until,
            per_image_seconds=tuple(per_image),
            backend=self.name,
            details=self.describe(),
        )

    def describe(self) -> dict[str, str]:
        """Facts for the sidebar and history: model, device, dtype, state."""
        facts = {"backend": "local", "model": self.model, "state": self.state}
        loaded = self._loaded
        if loaded is not None:
            facts.update(device=loaded.choice.device, dtype=loaded.choice.dtype)
        return facts
