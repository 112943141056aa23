"""The remote backend: Hugging Face inference through `huggingface_hub.InferenceClient`.

It reaches a dedicated Inference Endpoint (`SD_REMOTE_URL`), an Inference Provider
(`SD_PROVIDER` + `SD_MODEL`), or any server that speaks the text-to-image task protocol:
`POST {"inputs": prompt, "parameters": {...}}` → image bytes. No torch, no diffusers: this
is the path of the light install (Streamlit Community Cloud, ~2.7 GB RAM, no GPU), and
huggingface_hub itself is imported inside functions so drawing a page stays cheap.
"""

from __future__ import annotations

import email.utils
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from core import slg
from core.generation import (
    BackendFacts,
    BackendState,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    GenerationStopped,
    GridProgressCallback,
    LoadFacts,
    LoadProgress,
    LoraMemory,
    LoraShelf,
    Progress,
    ProgressCallback,
    StopCheck,
)
from core.modes import MODES, get_mode
from core.safe_text import QUOTE_LIMIT, display_url, excerpt, quote, redact, url_secrets

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0  # seconds one call may take before we call it a timeout
DEFAULT_MAX_WAIT = 600.0  # seconds of 503 "scaling up" answers we wait out per image
RATE_LIMIT_AUTO_WAIT = 10.0  # a 429 asking for at most this long is waited out, once
POLL_SECONDS = 0.1  # how often Stop is checked and progress reported while waiting
LATENCY_HISTORY = 20  # successful calls kept for the hardware page
TOKENS_URL = "https://huggingface.co/settings/tokens"
_BODY_SCAN = 4096  # characters of an error body ever looked at
TEXT_TO_IMAGE = "text_to_image"  # the inference tasks `_call` runs (InferenceClient)
IMAGE_TO_IMAGE = "image_to_image"
TEXT_ONLY = (
    "This service makes images from text only: {what} needs image-to-image, which it does "
    "not offer here{why}. Text to image works; for {what}, use the local backend "
    "(SD_BACKEND=local){fix}."
)
# The largest image an answer may hold, checked from its header before any pixel is decoded.
# A correct answer has the requested size (at most 1440², about 2 MP); 4096² leaves room for
# a service that upscales, and stays far below Pillow's bomb threshold (89 MP warns, 179 MP
# raises), so no answer can make this process decode hundreds of megapixels.
MAX_ANSWER_PIXELS = 4096 * 4096


class AnswerTooLarge(ValueError):  # noqa: N818 - reads as "raise AnswerTooLarge"
    """The service sent an image larger than MAX_ANSWER_PIXELS; it was not decoded."""

    def __init__(self, size: tuple[int, int]):
        super().__init__("image too large to decode")
        self.size = size


class WrongSize(ValueError):  # noqa: N818 - reads as "raise WrongSize"
    """The service answered an image of another size than asked; it was not decoded."""

    def __init__(self, got: tuple[int, int], wanted: tuple[int, int]):
        super().__init__("image of another size")
        self.got, self.wanted = got, wanted


class RemoteStopped(GenerationStopped):
    """The user stopped a remote generation; the request in flight is abandoned."""

    def __init__(self, done: int, total: int):
        super().__init__(done, total)
        self.args = (
            f"Stopped after {done} of {total} image(s); the remote request was abandoned.",
        )


@dataclass(frozen=True)
class RemoteCall:
    """One successful call: when it ended (epoch seconds), how long it took, what it made."""

    finished_at: float
    seconds: float
    width: int
    height: int
    steps: int


@dataclass(frozen=True)
class RemoteFailure:
    """A failed call we can explain: the HTTP status (if any), when to retry, and the fix."""

    message: str
    status: int | None = None
    retry_after: float | None = None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def backoff_delay(attempt: int) -> float:
    """Seconds before retry number `attempt` (0-based) of a scaling-up endpoint: 2, 4, 8, … 30."""
    return float(min(2 ** (attempt + 1), 30))


def _format_wait(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    return f"{seconds / 60:.0f} min"


def _is_network_error(exc: BaseException) -> bool:
    # httpx (huggingface_hub ≥ 1.0 ships it as httpx2) and requests name them alike.
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, ConnectionError) or bool(
        names & {"ConnectError", "NetworkError", "TransportError", "ProxyError"}
    )


def _body_hint(response: Any, token: str | None = None) -> str:
    """A short excerpt of an error body, if the client read one: plain text, redacted.

    The body is the service's text, not ours: it may echo the request's Authorization
    header or hold markdown. It is cut to a one-line code span with tokens removed.
    """
    try:
        text = response.text
    except RuntimeError:  # httpx's ResponseNotRead: a streamed body that was never read
        return ""
    text = (text or "")[:_BODY_SCAN].strip()
    return f" The service said: {excerpt(text, secrets=(token,))}" if text else ""


def explain_remote_error(
    exc: BaseException,
    *,
    target: str,
    has_token: bool,
    timeout: float,
    token: str | None = None,
    task: str = TEXT_TO_IMAGE,
) -> RemoteFailure | None:
    """Turn a failed `text_to_image` (or `image_to_image`: `task`) call into the fix a user
    can apply, or None.

    `token` is the configured token: it is redacted from anything the service said.
    """
    # Why this is long: one branch per failure a user can fix (offline, timeout, not an
    # image, each HTTP status, network, token); each says its own remedy in its own words.
    from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, OfflineModeIsEnabled
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, OfflineModeIsEnabled):
        return RemoteFailure(
            "HF_HUB_OFFLINE is set, which blocks every request huggingface_hub makes. "
            "Unset it to use the remote backend."
        )
    if isinstance(exc, InferenceTimeoutError):
        return RemoteFailure(
            f"{target} did not answer within {timeout:.0f} s. The service may be overloaded "
            "or the image too large for it; try again, or use a smaller size or fewer steps."
        )
    if isinstance(exc, AnswerTooLarge | Image.DecompressionBombError):
        pixels = exc.size if isinstance(exc, AnswerTooLarge) else None  # Pillow's: unknown
        size = f" ({pixels[0]}×{pixels[1]})" if pixels else ""
        return RemoteFailure(
            f"{target} sent an image too large to open safely{size}: this app decodes at most "
            f"{MAX_ANSWER_PIXELS / 1e6:.1f} megapixels per answer and asked for far less. "
            "Nothing was decoded or kept. Check that SD_REMOTE_URL points at a text-to-image "
            "endpoint that returns the requested size."
        )
    if isinstance(exc, WrongSize):
        return RemoteFailure(
            f"{target} answered a {exc.got[0]}×{exc.got[1]} image for a "
            f"{exc.wanted[0]}×{exc.wanted[1]} request. Nothing was kept: a record must hold "
            "the size it says."
        )
    not_image = isinstance(exc, UnidentifiedImageError) or (
        isinstance(exc, OSError)
        and "image" in str(exc).lower()
        and not _is_network_error(exc)
        and not isinstance(exc, HfHubHTTPError)  # a status with "image" in its body
    )
    if not_image:
        return RemoteFailure(
            f"{target} answered, but not with an image. Check that SD_REMOTE_URL points at "
            "a text-to-image endpoint (not a web page or another task)."
        )
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        hint = _body_hint(exc.response, token)
        if task == IMAGE_TO_IMAGE and status in (400, 404, 405, 422):
            return RemoteFailure(
                f"{target} refused an image-to-image request ({status}): it may make images "
                "from text only. Set SD_REMOTE_IMAGE_TO_IMAGE=false to stop offering Vary "
                f"and Upscale with it.{hint}",
                status,
            )
        if status == 401:
            token = "HF_TOKEN is not set" if not has_token else "HF_TOKEN was refused"
            return RemoteFailure(
                f"{target} refused the request (401): {token}. Create a token at {TOKENS_URL} "
                "with the “Make calls to Inference Providers” permission and set HF_TOKEN in "
                "the app's secrets.",
                status,
            )
        if status == 403:
            return RemoteFailure(
                f"{target} refused this token (403): it lacks access. Give the token the "
                "“Make calls to Inference Providers” permission (or, for a private "
                "endpoint, use a token of the endpoint's owner or organization), and accept "
                f"the model's licence on its Hub page.{hint}",
                status,
            )
        if status == 404:
            return RemoteFailure(
                f"{target} does not serve this model (404). Check SD_REMOTE_URL, or that "
                f"SD_PROVIDER offers SD_MODEL for text-to-image.{hint}",
                status,
            )
        if status == 429:
            retry = parse_retry_after(exc.response.headers.get("Retry-After"))
            when = f"in {_format_wait(retry)}" if retry is not None else "in a minute"
            return RemoteFailure(
                f"{target} is rate limiting this app (429). Try again {when}; a dedicated "
                "Inference Endpoint has no shared rate limit.",
                status,
                retry,
            )
        if status == 503:
            retry = parse_retry_after(exc.response.headers.get("Retry-After"))
            return RemoteFailure(
                f"{target} is not ready (503): a scaled-to-zero endpoint takes a few minutes "
                "to start. Try again shortly, or set its minimum replicas to 1 to avoid the "
                f"wait.{hint}",
                status,
                retry,
            )
        if status in (400, 422):
            return RemoteFailure(
                f"{target} rejected the parameters ({status}); it may not support this size "
                f"or number of steps.{hint}",
                status,
            )
        if status >= 500:
            return RemoteFailure(
                f"{target} failed ({status}). Try again; if it persists, check the "
                f"endpoint's logs.{hint}",
                status,
            )
        # Any other status: still a message in our words, never the raw exception.
        return RemoteFailure(f"{target} answered with HTTP status {status}.{hint}", status)
    if _is_network_error(exc):
        detail = excerpt(str(exc), secrets=(token,), limit=QUOTE_LIMIT * 2)
        return RemoteFailure(f"Could not connect to {target}: {detail}. Check SD_REMOTE_URL.")
    if isinstance(exc, ValueError):
        text = str(exc)
        if "api_key" in text:
            return RemoteFailure(
                f"HF_TOKEN is not set: {target} needs one. Create a token at {TOKENS_URL} "
                "with the “Make calls to Inference Providers” permission."
            )
        if "not supported" in text or "No provider mapping" in text:
            return RemoteFailure(
                f"{excerpt(text, secrets=(token,))}. Check SD_PROVIDER and SD_MODEL (the "
                "model's Hub page lists the "
                "Inference Providers that serve it)."
            )
    return None


def summarize_latencies(calls: Iterable[RemoteCall]) -> dict[str, str]:
    """Latency of recent successful calls, formatted: calls, last, median, slowest (pure)."""
    seconds = [c.seconds for c in calls]
    if not seconds:
        return {"calls": "none yet"}
    return {
        "calls": str(len(seconds)),
        "last_call": f"{seconds[-1]:.1f} s",
        "median_call": f"{statistics.median(seconds):.1f} s",
        "slowest_call": f"{max(seconds):.1f} s",
    }


_FACT_LABELS = {
    "endpoint": "Endpoint",
    "provider": "Inference provider",
    "model": "Model",
    "token": "HF token",
    "timeout": "Timeout per call",
    "calls": "Calls recorded",
    "last_call": "Last call",
    "median_call": "Median call",
    "slowest_call": "Slowest call",
    "reproducible": "Identical pixels for a seed",
}


def remote_facts(description: dict[str, str]) -> list[tuple[str, str]]:
    """(label, value) rows for the hardware page from the remote facts (pure)."""
    return [(label, description[key]) for key, label in _FACT_LABELS.items() if key in description]


NO_LORAS = (
    "LoRAs apply to the local pipeline only: a remote service runs its own model as it is. "
    "Use the local backend (SD_BACKEND=local) with SD_LORA_DIR for them."
)


def _refuse_local_only(request: GenerationRequest) -> None:
    """Refuse what only the local pipeline takes: LoRAs, skip layer guidance, and pipeline
    arguments a grid cell adds beyond its mode's (an SLG axis). Nothing is sent."""
    if request.loras:
        raise GenerationError(NO_LORAS)
    if slg.slg_runs(slg.from_option(request.mode_options.get("slg")), request.guidance_scale):
        raise GenerationError(slg.REMOTE_NOTE)  # nothing sent: the record would lie
    extra = set(request.pipeline_kwargs()) - set(GenerationRequest.pipeline_kwargs(request))
    if extra:
        raise GenerationError(
            f"A remote service cannot be sent {', '.join(sorted(extra))}: it takes its task's "
            "settings only. Use the local backend (SD_BACKEND=local)."
        )


def text_only_message(mode_label: str, *, why: str = "", fix: str = "") -> str:
    """The plain words for a mode this service cannot run: it makes images from text only."""
    return TEXT_ONLY.format(what=mode_label, why=why, fix=fix)


def _answer_size(image: Any) -> tuple[int, int]:
    """The answer's size from its header (nothing decoded); refuse one too large to open."""
    width, height = image.size
    if width * height > MAX_ANSWER_PIXELS:
        raise AnswerTooLarge((width, height))
    return width, height


def _source_png(request: GenerationRequest) -> bytes:
    """What an image-to-image call sends: the source, enlarged first for Upscale (the
    Lanczos step of the hires fix runs here; the service does the refinement)."""
    import io

    source = request.source
    assert source is not None  # the request checks it
    if source.size == (request.width, request.height):
        return source.png
    from PIL import Image

    image = source.image("RGB").resize((request.width, request.height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class RemoteBackend:
    """Generation on a remote inference service; many sessions may call it at once.

    Implements `core.generation.Backend` truthfully: the service holds the model, so the
    state is always "nothing to load", there is no load to watch, cancel or undo, no memory
    plan here and no queue (the service runs requests side by side). It runs text to image,
    and image to image (Vary, Upscale) where the service offers that task
    (`image_to_image`: a provider's mapping decides at the first call; an endpoint URL
    says so with SD_REMOTE_IMAGE_TO_IMAGE=true). Inpainting is local only.
    """

    name = "remote"
    supports_preview = False  # the service sends only the finished image
    state = BackendState.NOTHING_TO_LOAD
    last_load_error = None
    loaded_facts: LoadFacts | None = None
    queue = None

    def __init__(
        self,
        *,
        url: str | None = None,
        provider: str | None = None,
        model: str,
        token_provider: Callable[[], str | None] = lambda: None,
        timeout: float = DEFAULT_TIMEOUT,
        max_wait: float = DEFAULT_MAX_WAIT,
        image_to_image: bool | None = None,
    ) -> None:
        self.url = url
        self.provider = None if url else (provider or "auto")
        # Whether to offer image to image. None: a provider's own mapping decides (tried at
        # the first call); an endpoint URL cannot be asked, so it is not offered unless set.
        self.image_to_image = image_to_image if image_to_image is not None else not url
        self.image_to_image_refused: str | None = None  # why the service said no, once it did
        self.model = model
        self.timeout = timeout
        self.max_wait = max_wait
        self._token_provider = token_provider
        self._lock = threading.Lock()
        self._calls: deque[RemoteCall] = deque(maxlen=LATENCY_HISTORY)

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes whose inference task this service runs: text to image always, image to
        image (Vary, Upscale) where it is offered and was not refused."""
        tasks = {TEXT_TO_IMAGE}
        if self.image_to_image and self.image_to_image_refused is None:
            tasks.add(IMAGE_TO_IMAGE)
        return tuple(m.id for m in MODES if m.remote_task in tasks)

    def why_not(self, mode_id: str) -> str:
        """Why `mode_id` does not run here, in plain words ("" when it does)."""
        mode = get_mode(mode_id)
        if mode.id in self.modes:
            return ""
        if mode.remote_task != IMAGE_TO_IMAGE:
            return (
                f"{mode.label} runs on the local backend only (SD_BACKEND=local): no inference "
                "task repaints a masked area."
            )
        if self.image_to_image_refused is not None:
            return self.image_to_image_refused
        return text_only_message(
            mode.label,
            fix="; an endpoint that serves image-to-image too takes SD_REMOTE_IMAGE_TO_IMAGE=true",
        )

    @property
    def target(self) -> str:
        """Who answers, in words for messages."""
        if self.url:  # never the credentials a URL may carry (user-info, query values)
            return f"The endpoint {quote(display_url(self.url), 120)}"
        return f"Inference provider {quote(self.provider)} for {quote(self.model)}"

    def load_progress(self) -> LoadProgress:
        return LoadProgress()  # no load ever runs here

    def load_async(self) -> Future[None]:
        """Nothing to load: an already finished future."""
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def ensure_loaded(self) -> None:
        return None

    def cancel_load(self) -> bool:
        return False  # no load to cancel

    def unload(self) -> bool:
        return False  # nothing was loaded here

    def recent_calls(self) -> tuple[RemoteCall, ...]:
        """The last successful calls, oldest first."""
        with self._lock:
            return tuple(self._calls)

    # --- one call ------------------------------------------------------------------------
    def _call(self, request: GenerationRequest, seed: int, token: str | None) -> Any:
        """Run in a worker thread: one image for one seed, fully decoded."""
        from huggingface_hub import InferenceClient

        if self.url:
            client = InferenceClient(model=self.url, token=token, timeout=self.timeout)
            model = None
        else:
            client = InferenceClient(provider=self.provider, token=token, timeout=self.timeout)
            model = self.model
        if get_mode(request.mode).remote_task == IMAGE_TO_IMAGE:
            image = client.image_to_image(
                _source_png(request),
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                num_inference_steps=request.num_inference_steps,
                guidance_scale=float(request.guidance_scale),
                model=model,
                target_size={"width": request.width, "height": request.height},
                strength=float(request.mode_options["strength"]),
                seed=seed,
            )
        else:
            image = client.text_to_image(
                request.prompt,
                negative_prompt=request.negative_prompt or None,
                width=request.width,
                height=request.height,
                num_inference_steps=request.num_inference_steps,
                guidance_scale=float(request.guidance_scale),
                seed=seed,
                model=model,
            )
        size = _answer_size(image)  # from the header: nothing is decoded yet
        if size != (request.width, request.height):
            raise WrongSize(size, (request.width, request.height))
        image.load()  # decode here: a truncated or non-image body fails in this thread
        return image if image.mode == "RGB" else image.convert("RGB")

    def _await(
        self,
        future: Future,
        *,
        report: Callable[[], None],
        should_stop: StopCheck | None,
        done: int,
        total: int,
    ) -> Any:
        """Wait for the worker, checking Stop and reporting progress every POLL_SECONDS.

        On Stop (or Streamlit's own stop raised from `report`) the worker is left to
        finish alone; whatever it returns is dropped with the future.
        """
        while True:
            # `wait`, not `future.result(timeout=)`: a call that times out raises a
            # TimeoutError subclass that must not be mistaken for "not done yet".
            if wait([future], timeout=POLL_SECONDS).done:
                return future.result()
            if should_stop is not None and should_stop():
                raise RemoteStopped(done, total)
            report()

    def _countdown(
        self,
        seconds: float,
        *,
        detail: str,
        progress: Callable[..., None],
        should_stop: StopCheck | None,
        done: int,
        total: int,
    ) -> None:
        """Wait `seconds` before a retry, reporting the time left (at least once)."""
        deadline = time.perf_counter() + seconds
        while True:
            left = deadline - time.perf_counter()
            if should_stop is not None and should_stop():
                raise RemoteStopped(done, total)
            progress("waiting", retry_in=max(left, 0.0), detail=detail)
            if left <= 0:
                return
            time.sleep(min(POLL_SECONDS, left))

    def _retry_delay(self, failure: RemoteFailure, *, attempt: int, spent: float) -> float | None:
        """Seconds to wait before retrying, or None to give up with the failure's message.

        `spent` is the wait budget used so far; each retry costs at least a second of it,
        so a service answering "Retry-After: 0" forever cannot keep us here forever.
        """
        if failure.status == 503:
            delay = (
                failure.retry_after if failure.retry_after is not None else backoff_delay(attempt)
            )
            return delay if spent + max(delay, 1.0) <= self.max_wait else None
        if failure.status == 429 and failure.retry_after is not None and attempt == 0:
            return failure.retry_after if failure.retry_after <= RATE_LIMIT_AUTO_WAIT else None
        return None

    def _one_image(
        self,
        request: GenerationRequest,
        seed: int,
        *,
        index: int,
        token: str | None,
        progress: Callable[..., None],
        should_stop: StopCheck | None,
    ) -> tuple[Any, float, float]:
        """One image, retrying while the service scales up. Return (image, call s, waited s)."""
        total = request.num_images
        attempt, waited, spent = 0, 0.0, 0.0
        while True:
            if should_stop is not None and should_stop():
                raise RemoteStopped(index, total)
            future: Future = Future()

            def work(future: Future = future) -> None:
                try:
                    future.set_result(self._call(request, seed, token))
                except BaseException as exc:  # handed to the waiting thread
                    future.set_exception(exc)

            call_start = time.perf_counter()
            threading.Thread(target=work, name="sd-remote-call", daemon=True).start()
            try:
                image = self._await(
                    future,
                    report=lambda: progress("requesting"),
                    should_stop=should_stop,
                    done=index,
                    total=total,
                )
            except GenerationStopped:
                raise
            except Exception as exc:
                self._image_to_image_refused(exc, request)
                failure = explain_remote_error(
                    exc,
                    target=self.target,
                    has_token=bool(token),
                    timeout=self.timeout,
                    token=token,
                    task=get_mode(request.mode).remote_task,
                )
                if failure is None:
                    raise
                delay = self._retry_delay(failure, attempt=attempt, spent=spent)
                log.info("remote call failed (%s); retry in %s s", failure.status, delay)
                if delay is None:  # a message never repeats what the URL's credentials were
                    secrets = [token, *url_secrets(self.url)]
                    raise GenerationError(redact(failure.message, secrets=secrets)) from exc
                detail = (
                    "The endpoint is starting up (scaling from zero)"
                    if failure.status == 503
                    else "Rate limited by the service"
                )
                self._countdown(
                    delay,
                    detail=detail,
                    progress=progress,
                    should_stop=should_stop,
                    done=index,
                    total=total,
                )
                attempt, waited, spent = attempt + 1, waited + delay, spent + max(delay, 1.0)
                continue
            return image, time.perf_counter() - call_start, waited

    # --- the contract --------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
        user: str = "",
        preview: bool = False,
    ) -> GenerationResult:
        """Make the request's images by one remote call per seed (seed, seed+1, …).

        `user` is who asked (logged; the service runs requests side by side, so there is no
        queue to share here: the daily limit is what bounds one person's spending).
        `preview` is accepted and has no effect: the service sends only the finished image.

        Progress has no steps here: "requesting" reports the time elapsed, "waiting" a
        countdown before a retry. A failed call raises `GenerationError` with the fix and
        records nothing; Stop raises `RemoteStopped` and drops the late answer.
        """
        self._require_mode(request)
        _refuse_local_only(request)
        start = time.perf_counter()
        token = self._token_provider()
        log.info("remote request for %s: %d image(s)", user or "the app", request.num_images)
        images, per_image, calls = [], [], []
        waited_total = 0.0
        index = 0

        def progress(phase: str, **extra: Any) -> None:
            if on_progress is not None:
                on_progress(
                    Progress(
                        phase,
                        time.perf_counter() - start,
                        image_index=index,
                        num_images=request.num_images,
                        **extra,
                    )
                )

        for index, seed in enumerate(request.seeds):  # noqa: B007 - read by progress()
            progress("requesting")
            image, seconds, waited = self._one_image(
                request,
                seed,
                index=index,
                token=token,
                progress=progress,
                should_stop=should_stop,
            )
            images.append(image)
            per_image.append(seconds)
            waited_total += waited
            calls.append(
                RemoteCall(
                    finished_at=time.time(),
                    seconds=seconds,
                    width=request.width,
                    height=request.height,
                    steps=request.num_inference_steps,
                )
            )
        # Only a whole request counts: a batch stopped or failed half-way records nothing.
        with self._lock:
            self._calls.extend(calls)
        total = time.perf_counter() - start
        return GenerationResult(
            request=request,
            images=tuple(images),
            seeds=request.seeds,
            queue_seconds=waited_total,
            load_seconds=0.0,
            generation_seconds=max(total - waited_total, 0.0),
            per_image_seconds=tuple(per_image),
            backend=self.name,
            details=self.identity(),
        )

    def generate_grid(
        self,
        plan: Any,
        *,
        user: str = "",
        on_progress: GridProgressCallback | None = None,
        should_stop: StopCheck | None = None,
        on_cell: Callable[[Any, GenerationResult], None] | None = None,
    ) -> Any:
        """Run `plan`'s cells in order, one remote call each (see `Backend.generate_grid`);
        a cell this client cannot send (LoRAs, SLG) refuses the grid before any call."""
        from core.grid_run import run_grid

        for cell in plan.cells:
            self._require_mode(cell.request)
            _refuse_local_only(cell.request)

        def run_cell(cell: Any) -> GenerationResult:
            def progress(p: Progress) -> None:
                if on_progress is not None:
                    on_progress(cell, p)

            return self.generate(
                cell.request, on_progress=progress, should_stop=should_stop, user=user
            )

        return run_grid(plan, run_cell, should_stop=should_stop, on_cell=on_cell)

    def loras(self) -> LoraShelf:
        return LoraShelf(note=NO_LORAS)

    def lora_hashes(self, names: Sequence[str]) -> dict[str, str]:
        return {}  # no LoRA files here

    def lora_memory(self) -> LoraMemory:
        return LoraMemory()

    def _require_mode(self, request: GenerationRequest) -> None:
        """Refuse, in plain words, a mode this service does not run (nothing is sent)."""
        why = self.why_not(request.mode)
        if why:
            raise GenerationError(why)

    def _image_to_image_refused(self, exc: BaseException, request: GenerationRequest) -> None:
        """A provider with no image-to-image for this model: remember it, and say so plainly
        (the page stops offering Vary and Upscale here)."""
        mode = get_mode(request.mode)
        text = str(exc)
        if mode.remote_task != IMAGE_TO_IMAGE or not isinstance(exc, ValueError):
            return
        if "not supported" not in text and "No provider mapping" not in text:
            return
        self.image_to_image_refused = text_only_message(
            "Vary and Upscale",
            why=f" (for {quote(self.model)}: {excerpt(text, limit=120)})",
        )
        raise GenerationError(self.image_to_image_refused) from exc

    def identity(self) -> dict[str, str]:
        """Who made an image, for history records: backend, endpoint or provider, model."""
        facts = {"backend": self.name, "model": self.model}
        if self.url:  # shown in the sidebar and stored in records and PNGs: no credentials
            facts["endpoint"] = display_url(self.url)
        else:
            facts["provider"] = str(self.provider)
        # Remote services run their own hardware and software: the same seed usually
        # gives the same image, but nothing here can promise identical pixels.
        facts["reproducible"] = "not guaranteed"
        return facts

    def describe(self) -> BackendFacts:
        """Facts for the sidebar and the hardware page: identity, state, recent latency."""
        identity = self.identity()
        facts = dict(identity)
        facts["token"] = "set" if self._token_provider() else "not set"
        facts["timeout"] = f"{self.timeout:.0f} s"
        facts.update(summarize_latencies(self.recent_calls()))
        return BackendFacts(
            backend=self.name,
            model=self.model,
            state=self.state,
            endpoint=identity.get("endpoint", ""),
            provider=identity.get("provider", ""),
            reproducible=identity["reproducible"],
            rows=tuple(remote_facts(facts)),
        )
