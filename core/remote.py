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
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from core.generation import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    GenerationStopped,
    Progress,
    ProgressCallback,
    StopCheck,
)
from core.safe_text import QUOTE_LIMIT, display_url, excerpt, quote, redact, url_secrets

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0  # seconds one call may take before we call it a timeout
DEFAULT_MAX_WAIT = 600.0  # seconds of 503 "scaling up" answers we wait out per image
RATE_LIMIT_AUTO_WAIT = 10.0  # a 429 asking for at most this long is waited out, once
POLL_SECONDS = 0.1  # how often Stop is checked and progress reported while waiting
LATENCY_HISTORY = 20  # successful calls kept for the hardware page
TOKENS_URL = "https://huggingface.co/settings/tokens"
_BODY_SCAN = 4096  # characters of an error body ever looked at
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
) -> RemoteFailure | None:
    """Turn a failed `text_to_image` call into the fix a user can apply, or None.

    `token` is the configured token: it is redacted from anything the service said.
    """
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
    not_image = isinstance(exc, UnidentifiedImageError) or (
        isinstance(exc, OSError) and "image" in str(exc).lower() and not _is_network_error(exc)
    )
    if not_image:
        return RemoteFailure(
            f"{target} answered, but not with an image. Check that SD_REMOTE_URL points at "
            "a text-to-image endpoint (not a web page or another task)."
        )
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        hint = _body_hint(exc.response, token)
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
    """(label, value) rows for the hardware page from `RemoteBackend.describe()` (pure)."""
    return [(label, description[key]) for key, label in _FACT_LABELS.items() if key in description]


class RemoteBackend:
    """Generation on a remote text-to-image service; many sessions may call it at once."""

    name = "remote"
    state = "loaded"  # nothing to load here: the service holds the model
    loading_elapsed = 0.0
    last_load_error = None

    def __init__(
        self,
        *,
        url: str | None = None,
        provider: str | None = None,
        model: str,
        token_provider: Callable[[], str | None] = lambda: None,
        timeout: float = DEFAULT_TIMEOUT,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        self.url = url
        self.provider = None if url else (provider or "auto")
        self.model = model
        self.timeout = timeout
        self.max_wait = max_wait
        self._token_provider = token_provider
        self._lock = threading.Lock()
        self._calls: deque[RemoteCall] = deque(maxlen=LATENCY_HISTORY)

    @property
    def target(self) -> str:
        """Who answers, in words for messages."""
        if self.url:  # never the credentials a URL may carry (user-info, query values)
            return f"The endpoint {quote(display_url(self.url), 120)}"
        return f"Inference provider {quote(self.provider)} for {quote(self.model)}"

    def load_async(self) -> Future[None]:
        """Nothing to load: an already finished future, for callers written for LocalBackend."""
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def ensure_loaded(self) -> None:
        return None

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
        width, height = image.size  # from the header: nothing is decoded yet
        if width * height > MAX_ANSWER_PIXELS:
            raise AnswerTooLarge((width, height))
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
                failure = explain_remote_error(
                    exc,
                    target=self.target,
                    has_token=bool(token),
                    timeout=self.timeout,
                    token=token,
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
    ) -> GenerationResult:
        """Make the request's images by one remote call per seed (seed, seed+1, …).

        `user` is who asked (logged; the service runs requests side by side, so there is no
        queue to share here: the daily limit is what bounds one person's spending).

        Progress has no steps here: "requesting" reports the time elapsed, "waiting" a
        countdown before a retry. A failed call raises `GenerationError` with the fix and
        records nothing; Stop raises `RemoteStopped` and drops the late answer.
        """
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

    def describe(self) -> dict[str, str]:
        """Facts for the sidebar and the hardware page: identity, state, recent latency."""
        facts = {**self.identity(), "state": self.state}
        facts["token"] = "set" if self._token_provider() else "not set"
        facts["timeout"] = f"{self.timeout:.0f} s"
        facts.update(summarize_latencies(self.recent_calls()))
        return facts
