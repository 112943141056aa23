"""The seed history: every generated image as a PNG file plus a row in SQLite.

Layout under `Settings.data_dir`::

    history.sqlite3            rows (WAL mode; one connection per call, so any thread may call)
    images/<id[:2]>/<id>.png   the PNG with its `parameters` and record chunks
    thumbs/<id[:2]>/<id>.webp  256 px thumbnail for the gallery grid

File names come from the record id (a uuid), never from the prompt. A save writes the PNG
and thumbnail to temporary names, fsyncs and renames them, and only then commits the row:
a crash in between leaves an orphan file, which start-up repairs from the record JSON the
PNG carries. A row whose image is gone is kept (its settings still reproduce it) and is
drawn with a placeholder.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import hashlib
import io
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from core import metadata
from core.demo import DEMO_MODEL
from core.generation import GenerationRequest

log = logging.getLogger(__name__)

DB_NAME = "history.sqlite3"
THUMB_SIZE = 256
PAGE_SIZE = 24
TMP_SUFFIX = ".tmp"
# A temporary or orphan file younger than this may belong to a save still running in
# another process; start-up repair leaves it alone.
ORPHAN_GRACE_SECONDS = 600.0


class HistoryError(RuntimeError):
    """The history could not be read or written; the message says where and what to do."""


@dataclass(frozen=True, kw_only=True)
class HistoryRecord:
    """One stored image and everything needed to make it again."""

    id: str
    created_at: float  # Unix time, UTC
    session_id: str
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    model: str
    model_revision: str
    scheduler: str
    device: str
    dtype: str
    torch_version: str
    diffusers_version: str
    transformers_version: str
    backend: str
    duration_seconds: float
    image_sha256: str = ""  # of the RGB pixels, so it survives any lossless re-encode

    def request(self) -> GenerationRequest:
        """The one-image request that reproduces this record."""
        return GenerationRequest(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            width=self.width,
            height=self.height,
            guidance_scale=self.guidance_scale,
            num_inference_steps=self.steps,
            num_images=1,
        )

    def form_values(self) -> dict[str, Any]:
        """The generator form's fields (`core.form.DEFAULTS` keys) for this record."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "randomize_seed": False,
            "width": self.width,
            "height": self.height,
            "guidance_scale": self.guidance_scale,
            "steps": self.steps,
            "num_images": 1,
        }

    def infotext(self) -> str:
        """A1111 `parameters` text for this record."""
        return metadata.build_infotext(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            steps=self.steps,
            sampler=self.scheduler,
            guidance_scale=self.guidance_scale,
            seed=self.seed,
            width=self.width,
            height=self.height,
            model=self.model,
            extra={
                "Model revision": self.model_revision,
                "Device": self.device,
                "Dtype": self.dtype,
                "Version": f"diffusers {self.diffusers_version}",
            },
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> HistoryRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


_FIELDS = [f.name for f in dataclasses.fields(HistoryRecord)]
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS records (
    {", ".join(f"{name} {'TEXT PRIMARY KEY' if name == 'id' else ''}" for name in _FIELDS)}
);
CREATE INDEX IF NOT EXISTS records_created_at ON records (created_at);
CREATE INDEX IF NOT EXISTS records_seed ON records (seed, created_at);
CREATE INDEX IF NOT EXISTS records_session ON records (session_id, created_at);
"""


# --- facts about the running environment ----------------------------------------------------
def package_version(name: str) -> str:
    """Installed version of a distribution, read without importing it ("" when absent)."""
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return ""


def model_revision(model: str) -> str:
    """Say exactly which weights `model` names.

    "demo" for the demo; for a local folder "local:" plus a SHA-256 over its
    model_index.json and every component's config; for a Hub id the commit hash of
    the cached snapshot (`refs/main`) or "unknown" when nothing is cached.
    """
    if model == DEMO_MODEL:
        return DEMO_MODEL
    path = Path(model).expanduser()
    if path.is_dir():
        digest = hashlib.sha256()
        configs = [path / "model_index.json", *sorted(path.glob("*/*config.json"))]
        for config in configs:
            if config.is_file():
                digest.update(config.relative_to(path).as_posix().encode())
                digest.update(config.read_bytes())
        return f"local:{digest.hexdigest()[:16]}"
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        ref = Path(HF_HUB_CACHE) / f"models--{model.replace('/', '--')}" / "refs" / "main"
        return ref.read_text().strip() or "unknown"
    except (OSError, ImportError):
        return "unknown"


def environment(backend: Any) -> dict[str, str]:
    """Facts a record keeps about how images are made now (backend must be loaded)."""
    facts = dict(backend.describe())
    loaded = getattr(backend, "loaded", None)
    scheduler = ""
    if loaded is not None:
        scheduler = type(loaded.pipe.scheduler).__name__
    model = facts.get("model", "")
    revision = model_revision(model) if model else ""
    if facts.get("backend") == "remote":  # which service made it: an endpoint or a provider
        revision = "remote " + (facts.get("endpoint") or f"provider {facts.get('provider')}")
    return {
        "model": model,
        "model_revision": revision,
        "scheduler": scheduler,
        "device": facts.get("device", ""),
        "dtype": facts.get("dtype", ""),
        "torch_version": package_version("torch"),
        "diffusers_version": package_version("diffusers"),
        "transformers_version": package_version("transformers"),
        "backend": facts.get("backend", getattr(backend, "name", "")),
    }


def environment_differences(record: HistoryRecord, now: Mapping[str, str]) -> list[str]:
    """Name what differs between the record's environment and `now` (see `environment`)."""
    labels = {
        "model": "model",
        "model_revision": "model revision",
        "scheduler": "scheduler",
        "device": "device",
        "dtype": "dtype",
        "torch_version": "torch",
        "diffusers_version": "diffusers",
        "transformers_version": "transformers",
    }
    return [
        f"{label}: recorded {getattr(record, key) or '?'}, now {now.get(key) or '?'}"
        for key, label in labels.items()
        if now.get(key) and getattr(record, key) != now.get(key)
    ]


# --- image files ------------------------------------------------------------------------------
def encode_png(image: Any, record: HistoryRecord) -> bytes:
    """PNG bytes of `image` carrying the A1111 `parameters` and full-record chunks."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=metadata.png_info(record.to_json(), record.infotext()))
    return buffer.getvalue()


def pixel_sha256(image: Any) -> str:
    """SHA-256 of the image's RGB pixel bytes."""
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def encode_thumbnail(image: Any) -> bytes:
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
    buffer = io.BytesIO()
    thumb.save(buffer, format="WEBP", quality=80)
    return buffer.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, and rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def placeholder_image(size: int = THUMB_SIZE, text: str = "image missing") -> bytes:
    """A grey PNG standing in for a missing or unreadable image."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (60, 60, 66))
    ImageDraw.Draw(image).text((12, size // 2 - 6), text, fill=(200, 200, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- the store --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    """One page of records, newest first, and how many match in all."""

    records: tuple[HistoryRecord, ...]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


@dataclass(frozen=True)
class Verification:
    """The outcome of regenerating a record and comparing pixels."""

    identical: bool
    differing_pixels: int
    max_difference: int
    png: bytes
    message: str


def _explain(exc: BaseException, where: Path) -> HistoryError:
    reason = getattr(exc, "strerror", None) or str(exc)
    code = getattr(exc, "errno", None)
    text = str(exc).lower()
    if code == errno.ENOSPC or "full" in text:
        fix = "Free some disk space"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS) or "readonly" in text:
        fix = "Make the folder writable"
    else:
        fix = "Check the folder"
    return HistoryError(
        f"Could not save to the history in {where}: {reason}. {fix}, or point SD_DATA_DIR "
        "at a writable folder. The image itself is still shown and can be downloaded."
    )


class HistoryStore:
    """The history under one data dir. Thread-safe: every call opens its own connection."""

    def __init__(self, data_dir: Path | str, *, repair: bool = True) -> None:
        self.root = Path(data_dir)
        self.db_path = self.root / DB_NAME
        self.images_dir = self.root / "images"
        self.thumbs_dir = self.root / "thumbs"
        self.repair_report: dict[str, int] = {}
        try:
            for folder in (self.root, self.images_dir, self.thumbs_dir):
                folder.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise _explain(exc, self.root) from exc
        if repair:
            self.repair_report = self.repair()

    # connections --------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=30.0)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:  # commit on success, roll back on error
                yield conn
        finally:
            conn.close()

    def image_path(self, record_id: str) -> Path:
        return self.images_dir / record_id[:2] / f"{record_id}.png"

    def thumb_path(self, record_id: str) -> Path:
        return self.thumbs_dir / record_id[:2] / f"{record_id}.webp"

    # writing ------------------------------------------------------------------------------
    def save(self, image: Any, record: HistoryRecord) -> HistoryRecord:
        """Store `image` with `record`: files first (atomically), then the row.

        Return the record with its image hash filled in; raise `HistoryError` when the
        data dir cannot be written.
        """
        record = dataclasses.replace(record, image_sha256=pixel_sha256(image))
        png = encode_png(image, record)
        thumb = encode_thumbnail(image)
        try:
            _write_atomic(self.image_path(record.id), png)
            _write_atomic(self.thumb_path(record.id), thumb)
            self._insert(record)
        except (OSError, sqlite3.Error) as exc:
            raise _explain(exc, self.root) from exc
        return record

    def _insert(self, record: HistoryRecord) -> None:
        row = dataclasses.asdict(record)
        with self._connect() as conn:
            conn.execute(
                f"INSERT INTO records ({', '.join(_FIELDS)}) "
                f"VALUES ({', '.join('?' for _ in _FIELDS)}) ON CONFLICT(id) DO NOTHING",
                [row[name] for name in _FIELDS],
            )

    def delete(self, record_id: str) -> bool:
        """Remove the row, then its files; return whether the row existed."""
        try:
            with self._connect() as conn:
                deleted = conn.execute("DELETE FROM records WHERE id = ?", (record_id,)).rowcount
            self.image_path(record_id).unlink(missing_ok=True)
            self.thumb_path(record_id).unlink(missing_ok=True)
        except (OSError, sqlite3.Error) as exc:
            raise _explain(exc, self.root) from exc
        return bool(deleted)

    # reading ------------------------------------------------------------------------------
    def _where(
        self, text: str | None, seed: int | None, session_id: str | None
    ) -> tuple[str, list[Any]]:
        clauses, args = [], []
        if text:
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("(prompt LIKE ? ESCAPE '\\' OR negative_prompt LIKE ? ESCAPE '\\')")
            args += [f"%{escaped}%"] * 2
        if seed is not None:
            clauses.append("seed = ?")
            args.append(seed)
        if session_id:
            clauses.append("session_id = ?")
            args.append(session_id)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def page(
        self,
        page: int = 1,
        *,
        page_size: int = PAGE_SIZE,
        text: str | None = None,
        seed: int | None = None,
        session_id: str | None = None,
    ) -> Page:
        """Records newest first, `page_size` per page (1-based `page`), filtered."""
        where, args = self._where(text, seed, session_id)
        try:
            with self._connect() as conn:
                total = conn.execute(f"SELECT COUNT(*) FROM records{where}", args).fetchone()[0]
                pages = max(1, -(-total // page_size))
                page = min(max(page, 1), pages)
                rows = conn.execute(
                    f"SELECT * FROM records{where} ORDER BY created_at DESC, id DESC "
                    "LIMIT ? OFFSET ?",
                    [*args, page_size, (page - 1) * page_size],
                ).fetchall()
        except sqlite3.Error as exc:
            raise HistoryError(f"Could not read the history in {self.root}: {exc}.") from exc
        records = tuple(HistoryRecord.from_mapping(dict(row)) for row in rows)
        return Page(records=records, total=total, page=page, page_size=page_size)

    def get(self, record_id: str) -> HistoryRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM records WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else HistoryRecord.from_mapping(dict(row))

    def count(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def png_bytes(self, record_id: str) -> bytes | None:
        """The stored PNG exactly as written, or None when the file is gone."""
        try:
            return self.image_path(record_id).read_bytes()
        except OSError:
            return None

    def thumbnail(self, record_id: str) -> bytes:
        """Thumbnail bytes for the grid, or a placeholder when missing or unreadable."""
        try:
            data = self.thumb_path(record_id).read_bytes()
        except OSError:
            return placeholder_image()
        from PIL import Image, UnidentifiedImageError

        try:  # reads the header only; st.image does the same and raises on garbage
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "WEBP":
                    raise ValueError(image.format)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return placeholder_image(text="image unreadable")
        return data

    def display_image(self, record_id: str) -> bytes:
        """The full PNG if it decodes, else a placeholder (never raises for a bad file)."""
        data = self.png_bytes(record_id)
        if data is None:
            return placeholder_image(512)
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return placeholder_image(512, "image unreadable")
        return data

    # repair -------------------------------------------------------------------------------
    def repair(self, *, grace_seconds: float = ORPHAN_GRACE_SECONDS) -> dict[str, int]:
        """Make files and rows agree after a crash; return counts of what was done.

        Old temporary files are removed; a PNG without a row gets its row back from the
        record JSON it carries (or is removed when it has none); a missing thumbnail is
        redrawn from its PNG. Rows whose PNG is gone are kept and counted.
        """
        report = {"temp_removed": 0, "rows_restored": 0, "files_removed": 0, "thumbs_rebuilt": 0}
        now = time.time()
        with self._connect() as conn:
            ids = {row[0] for row in conn.execute("SELECT id FROM records")}
        try:
            # One directory listing per folder, no stat per file: start-up stays fast at
            # tens of thousands of records. Only temporaries and orphans are looked at.
            pngs = _listing(self.images_dir)
            thumbs = _listing(self.thumbs_dir)
            for name, path in [*pngs.items(), *thumbs.items()]:
                if name.endswith(TMP_SUFFIX) and now - os.stat(path).st_mtime > grace_seconds:
                    Path(path).unlink(missing_ok=True)
                    report["temp_removed"] += 1
            png_ids = {name[:-4] for name in pngs if name.endswith(".png")}
            thumb_ids = {name[:-5] for name in thumbs if name.endswith(".webp")}
            for record_id in png_ids - ids:
                path = self.image_path(record_id)
                if now - path.stat().st_mtime <= grace_seconds:
                    continue  # maybe a save in progress elsewhere: its row is coming
                record = self._record_from_file(path)
                if record is not None and record.id == record_id:
                    self._insert(record)
                    ids.add(record_id)
                    report["rows_restored"] += 1
                else:
                    path.unlink(missing_ok=True)
                    self.thumb_path(record_id).unlink(missing_ok=True)
                    png_ids.discard(record_id)
                    report["files_removed"] += 1
            for record_id in (ids & png_ids) - thumb_ids:
                self._rebuild_thumbnail(record_id)
                report["thumbs_rebuilt"] += 1
            report["rows_without_image"] = len(ids - png_ids)
        except OSError as exc:  # a read-only dir can still be browsed
            log.warning("history repair skipped: %s", exc)
        if any(report.values()):
            log.info("history repair in %s: %s", self.root, report)
        return report

    def _record_from_file(self, path: Path) -> HistoryRecord | None:
        try:
            chunks = metadata.read_png_text(path.read_bytes())
            return HistoryRecord.from_mapping(json.loads(chunks[metadata.RECORD_KEY]))
        except (metadata.MetadataError, KeyError, TypeError, ValueError, OSError):
            return None

    def _rebuild_thumbnail(self, record_id: str) -> None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.image_path(record_id)) as image:
                _write_atomic(self.thumb_path(record_id), encode_thumbnail(image))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            log.warning("could not redraw the thumbnail of %s: %s", record_id, exc)


def _listing(folder: Path) -> dict[str, str]:
    """File name → path for every file one level below `folder` (the id-prefix folders)."""
    found: dict[str, str] = {}
    with os.scandir(folder) as prefixes:
        for prefix in prefixes:
            if prefix.is_dir():
                with os.scandir(prefix.path) as entries:
                    found.update({e.name: e.path for e in entries if e.is_file()})
    return found


_STORES: dict[Path, HistoryStore] = {}
_STORES_LOCK = threading.Lock()


def open_store(data_dir: Path | str) -> HistoryStore:
    """The process-wide store for `data_dir` (repaired once, in the background)."""
    key = Path(data_dir).resolve()
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None or not store.db_path.exists():
            store = _STORES[key] = HistoryStore(key, repair=False)
            # Repair lists every image folder (~0.2 s at 10,000 records): run it beside the
            # first page render instead of before it. It is safe next to saves: files younger
            # than the grace period are left alone, and rows are only ever added.
            threading.Thread(target=_repair_quietly, args=(store,), daemon=True).start()
        return store


def _repair_quietly(store: HistoryStore) -> None:
    try:
        store.repair_report = store.repair()
    except (OSError, sqlite3.Error) as exc:  # a broken dir shows up on the next real call
        log.warning("history repair skipped: %s", exc)


# --- from a generation to records ---------------------------------------------------------------
def new_record(
    request: GenerationRequest,
    *,
    seed: int,
    facts: Mapping[str, str],
    session_id: str,
    duration_seconds: float,
    created_at: float | None = None,
) -> HistoryRecord:
    """The record of one image of `request` made with `seed` in environment `facts`."""
    return HistoryRecord(
        id=uuid.uuid4().hex,
        created_at=time.time() if created_at is None else created_at,
        session_id=session_id,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=seed,
        width=request.width,
        height=request.height,
        steps=request.num_inference_steps,
        guidance_scale=float(request.guidance_scale),
        duration_seconds=float(duration_seconds),
        **{key: str(facts.get(key, "")) for key in _FACT_KEYS},
    )


_FACT_KEYS = (
    "model",
    "model_revision",
    "scheduler",
    "device",
    "dtype",
    "torch_version",
    "diffusers_version",
    "transformers_version",
    "backend",
)


def save_result(
    result: Any, *, backend: Any, data_dir: Path | str, session_id: str
) -> list[HistoryRecord]:
    """Save every image of a `GenerationResult`; raise `HistoryError` when it cannot."""
    store = open_store(data_dir)
    facts = environment(backend)
    seconds: Sequence[float] = result.per_image_seconds or [
        result.generation_seconds / max(len(result.images), 1)
    ] * len(result.images)
    records = []
    for image, seed, duration in zip(result.images, result.seeds, seconds, strict=True):
        record = new_record(
            result.request,
            seed=seed,
            facts=facts,
            session_id=session_id,
            duration_seconds=duration,
        )
        records.append(store.save(image, record))
    return records


def format_time(timestamp: float) -> str:
    """A record's Unix time as readable UTC, e.g. "2026-11-26 10:48:18 UTC"."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def session_id(state: Any) -> str:
    """This browser session's id, kept in `st.session_state` (made on first use)."""
    if "history_session_id" not in state:
        state["history_session_id"] = uuid.uuid4().hex
    return state["history_session_id"]


# --- regenerate & verify -------------------------------------------------------------------------
def compare_png(expected: bytes, image: Any) -> tuple[int, int]:
    """Return (differing pixels, largest channel difference) between stored PNG and `image`."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(expected)) as stored:
        a = np.asarray(stored.convert("RGB"), dtype=np.int16)
    b = np.asarray(image.convert("RGB"), dtype=np.int16)
    if a.shape != b.shape:
        return a.shape[0] * a.shape[1], 255
    diff = np.abs(a - b)
    return int(diff.any(axis=-1).sum()), int(diff.max(initial=0))


def verify(store: HistoryStore, record: HistoryRecord, backend: Any) -> Verification:
    """Run the record's request again on `backend` and compare with the stored image."""
    result = backend.generate(record.request())
    image = result.images[0]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    expected = store.png_bytes(record.id)
    if expected is None:
        return Verification(
            False, 0, 0, buffer.getvalue(), "The stored image is missing: nothing to compare."
        )
    from PIL import UnidentifiedImageError

    try:
        differing, largest = compare_png(expected, image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return Verification(
            False, 0, 0, buffer.getvalue(), "The stored image is unreadable: nothing to compare."
        )
    total = record.width * record.height
    if differing == 0:
        message = "identical: every pixel matches the stored image."
    else:
        message = (
            f"different: {differing} of {total} pixels ({differing / total:.2%}) differ, "
            f"by up to {largest}/255."
        )
    return Verification(differing == 0, differing, largest, buffer.getvalue(), message)
