"""Fetch a pipeline from the Hub with byte progress, before `from_pretrained` reads it.

diffusers' `from_pretrained` shows no progress a page can use (it ignores `tqdm_class`), so
the app downloads first and then loads from the cache folder:

1. `HfApi.model_info` raises gated/401/404/offline errors before any byte moves;
2. diffusers' own `DiffusionPipeline.download` picks the files (components passed as None
   are skipped), with its final `snapshot_download` call captured instead of run;
3. `snapshot_download(dry_run=True)` gives each file's size and whether it is cached, so a
   disk without room is refused before the first weight byte;
4. `snapshot_download(tqdm_class=ByteCounter)` downloads, counting bytes into a
   `LoadStatus` that every session reads; a cancel raises inside the counter.

Orphaned `*.incomplete` files (a killed process; huggingface_hub never resumes or removes
them across processes) are removed before and after, when nobody holds their lock.
No torch import here.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.models import Family, pipeline_class, resolve_family
from core.units import human_bytes, human_duration

log = logging.getLogger(__name__)

# Room kept free on the cache disk beyond the files themselves (logs, other programs).
DISK_MARGIN_BYTES = 200_000_000
READ_CHUNK = 16 * 1024 * 1024
SPEED_WINDOW_S = 10.0
CANCEL_POLL_S = 0.1  # how often a download is checked for a cancel
CANCEL_GRACE_S = 2.0  # how long a cancel waits for the download to stop at its next bytes
# Components the drop-T5 plan leaves out: both, or the tokenizer would still be fetched.
T5_COMPONENTS = ("text_encoder_3", "tokenizer_3")


class DownloadError(RuntimeError):
    """The download cannot start or did not finish; the message says why and the fix."""


class DownloadCancelled(DownloadError):  # noqa: N818 - reads as "raise DownloadCancelled"
    """Someone pressed Cancel; partial files were removed, finished files were kept."""


class LoadStatus:
    """What the load of the shared pipeline is doing now; thread-safe, read by every session.

    `phase` is "idle", "starting" (imports, device), "checking" (asking the Hub),
    "downloading", "reading" (weights into memory), "building" (`from_pretrained` and
    moving to the device), "quantizing" (SD_QUANT's plan, core.quantize) or "paging" (an
    offload plan's weights paged in at load, core.warmup).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.phase = "idle"
            self.done_bytes = 0
            self.total_bytes = 0
            self.files_done = 0
            self.files_total = 0
            self.cache_dir = ""
            self.phases: list[str] = []  # every phase this load went through, in order
            self.bytes_by_phase: dict[str, tuple[int, int]] = {}  # phase: (done, total)
            self._samples: deque[tuple[float, int]] = deque()
            self._phase_since = time.monotonic()
        self._cancel.clear()

    # --- written by the loading thread ---------------------------------------------------
    def start(self, phase: str, *, total_bytes: int = 0, files_total: int = 0) -> None:
        with self._lock:
            if self.phase != "idle":
                self.bytes_by_phase[self.phase] = (self.done_bytes, self.total_bytes)
            self.phase = phase
            self.phases.append(phase)
            self.done_bytes, self.total_bytes = 0, total_bytes
            self.files_done, self.files_total = 0, files_total
            self._phase_since = time.monotonic()
            self._samples = deque([(self._phase_since, 0)])

    def add_bytes(self, n: int) -> None:
        """Count `n` bytes; raise `DownloadCancelled` when a cancel was asked for."""
        if self._cancel.is_set():
            raise DownloadCancelled("The download was cancelled.")
        with self._lock:
            self.done_bytes += n
            now = time.monotonic()
            self._samples.append((now, self.done_bytes))
            while len(self._samples) > 2 and now - self._samples[0][0] > SPEED_WINDOW_S:
                self._samples.popleft()

    def add_file(self) -> None:
        with self._lock:
            self.files_done += 1

    # --- read by the pages -----------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._phase_since

    @property
    def speed(self) -> float | None:
        """Bytes per second over the last few seconds, or None before two samples."""
        with self._lock:
            if len(self._samples) < 2:
                return None
            (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        if t1 - t0 < 0.2:
            return None
        return (b1 - b0) / (t1 - t0)

    @property
    def fraction(self) -> float:
        return min(self.done_bytes / self.total_bytes, 1.0) if self.total_bytes else 0.0

    def text(self) -> str:
        """One line for the progress display, e.g. "1.2 GB of 16.3 GB · 38 MB/s · 7 min left"."""
        if self.phase == "starting":
            return f"Starting: importing torch and diffusers · {self.seconds:.0f} s"
        if self.phase == "checking":
            return f"Checking the model on the Hub · {self.seconds:.0f} s"
        if self.phase in ("downloading", "reading"):
            verb = "Downloading" if self.phase == "downloading" else "Reading weights into memory"
            parts = [f"{verb}: {human_bytes(self.done_bytes)} of {human_bytes(self.total_bytes)}"]
            speed = self.speed
            if speed:
                parts.append(f"{human_bytes(speed, whole=speed >= 10e6)}/s")
                left = (self.total_bytes - self.done_bytes) / speed if speed > 0 else None
                if left is not None:
                    parts.append(f"{human_duration(left)} left")
            return " · ".join(parts)
        if self.phase == "building":
            return f"Building the pipeline · {self.seconds:.0f} s"
        if self.phase == "quantizing":
            return f"Quantizing weights (torchao) · {self.seconds:.0f} s"
        if self.phase == "paging":
            return f"Paging the offloaded weights into memory · {self.seconds:.0f} s"
        return ""


class ByteCounter(tqdm):
    """A plain-tqdm bar that forwards byte counts to a `LoadStatus` and draws nothing.

    huggingface_hub's own tqdm is disabled without a terminal, so this derives from plain
    tqdm. `snapshot_download` makes one bytes bar ("Reconstructing…"), one transfer bar
    (Xet only) and one files bar; only the first counts towards "done of total".
    """

    status: LoadStatus | None = None  # set on a subclass per download (see `counter_for`)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("name", None)
        kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
        kwargs["mininterval"] = 3600.0  # never redraw: the page draws the progress
        self._role = _bar_role(kwargs.get("desc") or "", kwargs.get("unit") or "it")
        super().__init__(*args, **kwargs)

    def update(self, n: float | None = 1) -> bool | None:
        if self.status is not None and n:
            if self._role == "bytes":
                self.status.add_bytes(int(n))
            elif self._role == "files":
                self.status.add_file()
        return super().update(n)

    def close(self) -> None:
        file = self.fp
        super().close()
        if hasattr(file, "close") and not getattr(file, "closed", True):
            file.close()


def _bar_role(desc: str, unit: str) -> str:
    if unit == "B" and desc.startswith("Reconstruct"):
        return "bytes"
    if unit == "B":
        return "transfer"
    return "files"


def counter_for(status: LoadStatus) -> type[ByteCounter]:
    """A `ByteCounter` class bound to `status` (snapshot_download takes a class)."""
    return type("BoundByteCounter", (ByteCounter,), {"status": status})


@dataclass(frozen=True)
class DownloadPlan:
    """The files diffusers would fetch for a pipeline, and what is left to download."""

    repo_id: str
    allow_patterns: tuple[str, ...]
    ignore_patterns: tuple[str, ...]
    files: tuple[tuple[str, int, bool], ...]  # (path in repo, size, already cached)
    cache_dir: str
    cached_folder: str | None = None  # diffusers found every file it needs in the cache

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.files)

    @property
    def missing_bytes(self) -> int:
        return sum(size for _, size, cached in self.files if not cached)

    @property
    def missing_files(self) -> int:
        return sum(1 for *_, cached in self.files if not cached)


class _Selected(Exception):  # noqa: N818 - a control-flow signal, never shown
    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("selection captured")
        self.kwargs = kwargs


_SELECT_LOCK = threading.Lock()


def select_patterns(
    repo_id: str, *, token: str | None, skip: Iterable[str] = (), family: Family | None = None
) -> tuple[list[str], list[str]] | str:
    """Ask diffusers which files the family's pipeline `from_pretrained` would fetch.

    Runs diffusers' own `download` (its selection of weights, variants and folders, with
    `skip` components passed as None) and captures the `snapshot_download` call it ends
    with. Return (allow_patterns, ignore_patterns), or the snapshot folder when diffusers
    found everything cached. `family` picks the text-to-image pipeline class (default:
    the family `repo_id` resolves to, `core.models`).
    """
    from diffusers.pipelines import pipeline_utils

    pipeline = pipeline_class(family or resolve_family(repo_id).family)

    def capture(*_args: Any, **kwargs: Any) -> str:
        raise _Selected(kwargs)

    none_components = dict.fromkeys(skip)
    with _SELECT_LOCK:
        original = pipeline_utils.snapshot_download
        pipeline_utils.snapshot_download = capture
        try:
            folder = pipeline.download(
                repo_id, token=token, use_safetensors=True, **none_components
            )
        except _Selected as selected:
            kwargs = selected.kwargs
        else:
            return str(folder)  # diffusers found every expected file in the cache
        finally:
            pipeline_utils.snapshot_download = original
    if kwargs.get("local_files_only"):
        raise DownloadError(f"The Hub did not answer for {repo_id}; try again.")
    return list(kwargs.get("allow_patterns") or []), list(kwargs.get("ignore_patterns") or [])


def hub_file_sizes(repo_id: str, *, token: str | None) -> dict[str, int]:
    """Every file of the repo with its size, from one `model_info` call."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo_id, token=token, files_metadata=True)
    return {s.rfilename: int(s.size or 0) for s in info.siblings or ()}


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def plan_download(
    repo_id: str, *, token: str | None, skip: Iterable[str] = (), family: Family | None = None
) -> DownloadPlan:
    """Work out the files, their sizes and what is cached; raise hub errors before any byte."""
    from huggingface_hub import HfApi, snapshot_download

    skip = tuple(skip)
    # The repo's own answer first: gated, unknown, bad token and offline all raise here,
    # as the hub's own exceptions that `core.errors` explains.
    HfApi().model_info(repo_id, token=token)
    patterns = select_patterns(repo_id, token=token, skip=skip, family=family)
    cache_dir = hub_cache_dir()
    if isinstance(patterns, str):
        return DownloadPlan(repo_id, (), (), (), cache_dir, cached_folder=patterns)
    allow, ignore = patterns
    infos = snapshot_download(
        repo_id,
        allow_patterns=allow,
        ignore_patterns=ignore,
        token=token,
        dry_run=True,
        tqdm_class=counter_for(LoadStatus()),  # a silent bar: no stderr noise
    )
    files = tuple(sorted((i.filename, int(i.file_size or 0), bool(i.is_cached)) for i in infos))
    return DownloadPlan(repo_id, tuple(allow), tuple(ignore), files, cache_dir)


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(plan: DownloadPlan) -> None:
    """Refuse a download the cache disk has no room for, naming the sizes and the place."""
    needed = plan.missing_bytes
    if not needed:
        return
    where = Path(plan.cache_dir)
    free = shutil.disk_usage(_existing_parent(where)).free
    if needed + DISK_MARGIN_BYTES > free:
        hf_home = os.environ.get("HF_HOME")
        home = f"HF_HOME={hf_home}" if hf_home else "HF_HOME unset: ~/.cache/huggingface"
        raise DownloadError(
            f"Not enough disk space to download {plan.repo_id}: it needs "
            f"{human_bytes(needed + DISK_MARGIN_BYTES)} ({human_bytes(needed)} of files and "
            f"{human_bytes(DISK_MARGIN_BYTES)} to spare) but only {human_bytes(free)} is free "
            f"in the cache at {where} ({home}). Free some space there, or set HF_HOME to a "
            "folder on a larger disk and restart."
        )


def _repo_folder(cache_dir: str, repo_id: str) -> Path:
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def remove_orphans(cache_dir: str, repo_id: str) -> list[Path]:
    """Delete `*.incomplete` blobs of `repo_id` whose download lock nobody holds.

    huggingface_hub writes `blobs/<etag>.<random>.incomplete` under the lock
    `.locks/<repo folder>/<etag>.lock`; a held lock means a live download (this process
    or another), which is left alone.
    """
    from filelock import FileLock, Timeout

    repo = _repo_folder(cache_dir, repo_id)
    removed = []
    for partial in sorted((repo / "blobs").glob("*.incomplete")):
        etag = partial.name.split(".", 1)[0]
        lock_path = Path(cache_dir) / ".locks" / repo.name / f"{etag}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(lock_path), timeout=0):
                partial.unlink(missing_ok=True)
        except Timeout:
            continue
        removed.append(partial)
    if removed:
        log.info("removed %d orphaned partial download(s) of %s", len(removed), repo_id)
    return removed


def fetch(plan: DownloadPlan, *, token: str | None, status: LoadStatus) -> str:
    """Download what the plan lacks with byte progress; return the snapshot folder.

    A cancel (or any failure) removes the partial files it leaves; finished files stay in
    the cache, where the next attempt finds them. Cancel returns within moments: the
    download runs in a thread of its own, which stops at its next bytes (the counter
    raises), lets go of its file lock and removes its partial file; a slow or stalled
    connection keeps that thread waiting, so after `CANCEL_GRACE_S` this load ends
    without it. A new download of the same file waits for that lock, then fetches what
    is still missing.
    """
    from huggingface_hub import snapshot_download

    status.cache_dir = plan.cache_dir
    remove_orphans(plan.cache_dir, plan.repo_id)
    if plan.cached_folder is not None:
        return plan.cached_folder
    check_disk(plan)
    status.start("downloading", total_bytes=plan.missing_bytes, files_total=plan.missing_files)
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def download() -> None:
        try:
            outcome["folder"] = snapshot_download(
                plan.repo_id,
                allow_patterns=list(plan.allow_patterns),
                ignore_patterns=list(plan.ignore_patterns),
                token=token,
                tqdm_class=counter_for(status),
            )
        except BaseException as exc:  # handed to the load below (or dropped after a cancel)
            outcome["error"] = exc
            remove_orphans(plan.cache_dir, plan.repo_id)
        finally:
            finished.set()

    threading.Thread(target=download, name="sd-download", daemon=True).start()
    while not finished.wait(CANCEL_POLL_S):
        if status.cancelled:
            # Flowing bytes end it within moments (and its partial file goes with it);
            # a stalled connection does not hold the cancel up longer than this.
            finished.wait(CANCEL_GRACE_S)
            raise DownloadCancelled("The download was cancelled.")
    if "error" in outcome:
        raise outcome["error"]
    return str(outcome["folder"])


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors files under a pipeline folder (what a first generation reads)."""
    return sorted(p for p in Path(folder).rglob("*.safetensors") if p.is_file())


def read_in(files: Iterable[Path], *, status: LoadStatus) -> int:
    """Read every file once, with byte progress, so the first generation finds it in memory.

    safetensors are memory-mapped: without this the load returns with a fraction resident
    and the first image pays for reading the rest. Return the bytes read.
    """
    files = list(files)
    total = sum(p.stat().st_size for p in files)
    status.start("reading", total_bytes=total, files_total=len(files))
    done = 0
    buffer = bytearray(READ_CHUNK)
    for path in files:
        with open(path, "rb", buffering=0) as handle:
            while n := handle.readinto(buffer):
                done += n
                status.add_bytes(n)
        status.add_file()
    return done


def drop_from_page_cache(files: Iterable[Path]) -> None:
    """Ask the kernel to forget these files' cached pages (benchmarks: a cold first read)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
