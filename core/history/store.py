"""The history store: one facade over the parts of a history, as callers have always used it.

`HistoryStore` keeps the public API the pages, use cases, tests and tools call; inside,
each seam is its own module and none asks which engine it runs on:

- `storage/` — where the history lives, one file per engine: `SqliteFiles` (a SQLite file
  and image files beside it, `SD_DATA_DIR`) and `PostgresTables` (PostgreSQL with the
  image bytes in a table, `SD_HISTORY_URL`), behind one `Storage` interface that also
  opens the database (read-only when writing is impossible) and words every error;
- `records`  — save, get, page, search, count, and the images of records;
- `trash`    — delete, restore, purge, the audit trail and the deleted list;
- `spending` — what each owner made today and holds: the daily limit's counts and its
  atomic reservations (`reserve`, `release`; saving against a reservation converts it);
- `repair`   — start-up repair of a local history after a crash;
- `grids`    — X/Y grids, whose cells are ordinary records pointing to them;
- `saved_styles` — named prompt styles, each person's own and the published ones.

The parts added for issue 19 are used through the store's attributes: `store.grids`
(`start`, `finish`, `get`, `cells`) and `store.styles` (`visible`, `save`, `save_many`,
`delete`, `publish`).

One `HistoryStore` per database URL and process (`open_store`), thread-safe: every call
takes a pooled connection for one short transaction. Every error leaves here as a
`HistoryError` in plain words, with the database named by its URL *without* the password
(`describe_url`): messages reach the page and the log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, Engine

from core.auth import LOCAL_USER
from core.history import repair as start_up_repair
from core.history.errors import (  # re-exported: the store's public names stay here too
    HistoryError,
    PartialSaveError,
    describe_url,
    parse_url,
)
from core.history.grids import GridRow, Grids
from core.history.record import HistoryRecord
from core.history.records import PAGE_SIZE, Page, Records, StoredImage
from core.history.repair import ORPHAN_GRACE_SECONDS, REPAIR_DELAY_SECONDS
from core.history.saved_styles import SavedStyle, SavedStyles
from core.history.spending import Reservation, Spending
from core.history.storage import Storage, open_storage
from core.history.trash import (
    RESTORE_DAYS,
    RESTORE_SECONDS,
    SYSTEM_ACTOR,
    AuditEntry,
    DeletedRecord,
    NotAllowed,
    Trash,
)
from core.limits import HOLD_SECONDS

DB_NAME = "history.sqlite3"

__all__ = [
    "DB_NAME",
    "ORPHAN_GRACE_SECONDS",
    "PAGE_SIZE",
    "REPAIR_DELAY_SECONDS",
    "RESTORE_DAYS",
    "RESTORE_SECONDS",
    "SYSTEM_ACTOR",
    "AuditEntry",
    "DeletedRecord",
    "GridRow",
    "HistoryError",
    "HistoryStore",
    "NotAllowed",
    "Page",
    "PartialSaveError",
    "Reservation",
    "SavedStyle",
    "StoredImage",
    "describe_url",
    "open_store",
    "parse_url",
]


class HistoryStore:
    """The history in one database (plus, for local SQLite, the files beside it)."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        url: URL | str | None = None,
        repair: bool = True,
    ) -> None:
        self.repair_report: dict[str, int] = {}
        self.opened_at = time.monotonic()
        if url is None:
            if data_dir is None:
                raise ValueError("HistoryStore needs a data dir or a URL")
            self.url = URL.create("sqlite", database=str(Path(data_dir) / DB_NAME))
            where = str(Path(data_dir))
        else:
            self.url = parse_url(url) if isinstance(url, str) else url
            where = describe_url(self.url)
        self.storage: Storage = open_storage(self.url, where)
        self.records = Records(self.storage)
        self.trash = Trash(self.storage)
        self.spending = Spending(self.storage)
        self.grids = Grids(self.storage)
        self.styles = SavedStyles(self.storage)
        if repair and self.storage.needs_repair and self.read_only is None:
            self.repair_report = self.repair()

    def __repr__(self) -> str:  # never the password
        return f"HistoryStore({self.where!r})"

    # where it lives ------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        return self.storage.engine

    @property
    def where(self) -> str:
        return self.storage.where

    @property
    def local(self) -> bool:
        """Whether this history is a folder on this machine (SQLite and image files)."""
        return self.storage.local

    @property
    def read_only(self) -> str | None:
        """Why saving is impossible (None when it is possible)."""
        return self.storage.read_only

    @property
    def root(self) -> Path | None:
        return self.storage.root

    @property
    def db_path(self) -> Path | None:
        return self.storage.db_path

    @property
    def blobs(self) -> Storage:
        """Where the image bytes are (the storage); kept for callers of the old name."""
        return self.storage

    # the local file layout (SQLite histories only) -------------------------------------------
    @property
    def images_dir(self) -> Path:
        return self.storage.images_dir  # type: ignore[attr-defined]

    @property
    def thumbs_dir(self) -> Path:
        return self.storage.thumbs_dir  # type: ignore[attr-defined]

    def image_path(self, record_id: str) -> Path:
        return self.storage.image_path(record_id)  # type: ignore[attr-defined]

    def thumb_path(self, record_id: str) -> Path:
        return self.storage.thumb_path(record_id)  # type: ignore[attr-defined]

    # records (core.history.records) ----------------------------------------------------------
    def save(
        self, image: Any, record: HistoryRecord, *, reservation: Reservation | None = None
    ) -> HistoryRecord:
        """Store `image` with `record`, all or nothing; return it with its image hash.
        A `reservation` of the record's owner gives up one place in the same step."""
        return self.records.save(image, record, reservation=reservation)

    def put(
        self,
        record: HistoryRecord,
        png: bytes | None,
        thumb: bytes | None,
        *,
        reservation: Reservation | None = None,
        inputs: Sequence[bytes] = (),
    ) -> None:
        """Store encoded bytes with their row in one step; nothing stays when it fails.
        A `reservation` of the record's owner gives up one place in the same step;
        `inputs` are the PNG bytes of the record's own source and mask (kept once each)."""
        self.records.put(record, png, thumb, reservation=reservation, inputs=inputs)

    def input_png(self, sha256: str) -> bytes | None:
        """A kept source's or mask's bytes, only when they still hash to `sha256`."""
        return self.records.input_png(sha256)

    def page(
        self,
        page: int = 1,
        *,
        page_size: int = PAGE_SIZE,
        text: str | None = None,
        seed: int | None = None,
        session_id: str | None = None,
        owner: str | None = None,
    ) -> Page:
        """Live records newest first, `page_size` per page (1-based `page`), filtered."""
        return self.records.page(
            page, page_size=page_size, text=text, seed=seed, session_id=session_id, owner=owner
        )

    def iter_records(self, *, batch: int = 500) -> Iterator[HistoryRecord]:
        """Every live record, oldest first, read in batches (for copies and exports)."""
        return self.records.iter_records(batch=batch)

    def ids(self, record_ids: Sequence[str]) -> set[str]:
        """Which of `record_ids` are stored."""
        return self.records.ids(record_ids)

    def get(self, record_id: str, *, include_deleted: bool = False) -> HistoryRecord | None:
        """The record, or None when there is none (or it is deleted, unless asked for)."""
        return self.records.get(record_id, include_deleted=include_deleted)

    def count(self) -> int:
        """Live records (deleted ones waiting for purge are not counted)."""
        return self.records.count()

    def png_bytes(self, record_id: str) -> bytes | None:
        """The stored PNG exactly as written, or None when it is gone or unreachable."""
        return self.records.png_bytes(record_id)

    def thumbnails(self, record_ids: Sequence[str]) -> dict[str, bytes]:
        """Thumbnail bytes per id, a placeholder for each missing, unreadable or huge one."""
        return self.records.thumbnails(record_ids)

    def thumbnail(self, record_id: str) -> bytes:
        """Thumbnail bytes for the grid, or a placeholder when missing or unreadable."""
        return self.records.thumbnails([record_id])[record_id]

    def stored_image(self, record_id: str) -> StoredImage:
        """The stored PNG with what to draw for it, from one read (never raises)."""
        return self.records.stored_image(record_id)

    # trash and audit (core.history.trash) ----------------------------------------------------
    def delete(self, record_id: str, *, actor: str = LOCAL_USER, admin: bool = False) -> bool:
        """Hide a record for `actor` (owner or admin only); return whether one was hidden."""
        return self.trash.delete(record_id, actor=actor, admin=admin)

    def restore(self, record_id: str, *, actor: str, admin: bool) -> bool:
        """Bring back a record deleted less than RESTORE_DAYS ago (admins only)."""
        return self.trash.restore(record_id, actor=actor, admin=admin)

    def purge(self, *, now: float | None = None) -> int:
        """Remove for good what was deleted more than RESTORE_DAYS ago; return how many."""
        return self.trash.purge(now=now)

    def audit_trail(self, *, limit: int = 200) -> list[AuditEntry]:
        """The newest audit entries first (who, what, which record, when)."""
        return self.trash.audit_trail(limit=limit)

    def deleted(self, *, limit: int = 200) -> list[DeletedRecord]:
        """Records deleted in the last RESTORE_DAYS, newest delete first (for restore)."""
        return self.trash.deleted(limit=limit)

    # spending (core.history.spending) --------------------------------------------------------
    def made_since(self, owner: str, since: float) -> int:
        """Images `owner` made since `since`: saved (deleted too) plus regenerations."""
        return self.spending.made_since(owner, since)

    def usage(self, owner: str, since: float, *, now: float | None = None) -> tuple[int, int]:
        """(made since `since`, places held now by `owner`'s running requests), one read."""
        return self.spending.usage(owner, since, now=now)

    def held(self, owner: str, *, now: float | None = None) -> int:
        """Places `owner`'s running requests hold now (live reservations)."""
        return self.spending.held(owner, now=now)

    def reserve(
        self,
        owner: str,
        count: int,
        limit: int,
        day_start: float,
        *,
        now: float | None = None,
        hold_seconds: float = HOLD_SECONDS,
    ) -> Reservation:
        """Hold `count` of `owner`'s `limit` places for the day from `day_start`, atomically
        across threads and processes, or raise `core.limits.LimitReached` naming the
        numbers. Made today (deleted and regenerated included) plus live reservations
        count. Convert places by saving with `reservation=`; `release` the rest."""
        return self.spending.reserve(
            owner, count, limit, day_start, now=now, hold_seconds=hold_seconds
        )

    def release(self, reservation: Reservation | None) -> bool:
        """Give back what `reservation` still holds; never raises (it expires anyway)."""
        return self.spending.release(reservation)

    def note_regenerate(
        self, actor: str, record: HistoryRecord, *, reservation: Reservation | None = None
    ) -> None:
        """Count a Regenerate & verify of `record` by `actor` (and audit it); a
        `reservation` gives up one place in the same step."""
        self.spending.note_regenerate(actor, record, reservation=reservation)

    # repair (core.history.repair) ------------------------------------------------------------
    def repair(self, *, grace_seconds: float = ORPHAN_GRACE_SECONDS) -> dict[str, int]:
        """Make image files and rows agree after a crash (local files only); return counts."""
        return self.storage.repair(grace_seconds=grace_seconds)


# --- one store per process -------------------------------------------------------------------
_STORES: dict[tuple[str, str], HistoryStore] = {}
_STORES_LOCK = threading.Lock()


def open_store(target: Any) -> HistoryStore:
    """The process-wide store for `Settings` (its `history_url`, else its `data_dir`) or a dir.

    A local history is repaired once, in the background. A failure is not cached: the
    next call tries again (the database may be back).
    """
    url = getattr(target, "history_url", None)
    data_dir = getattr(target, "data_dir", target)
    key = ("url", url) if url else ("dir", str(Path(data_dir).resolve()))
    with _STORES_LOCK:
        store = _STORES.get(key)
        stale = store is not None and (
            (store.db_path is not None and not store.db_path.exists())
            # Read-only may be passing (a remount, a lock held too long): look again.
            or (store.read_only is not None and time.monotonic() - store.opened_at > 30)
        )
        if store is None or stale:
            if url:
                store = HistoryStore(url=url, repair=False)
            else:
                store = HistoryStore(Path(key[1]), repair=False)
            _STORES[key] = store
            if store.read_only is None:
                if store.storage.needs_repair:
                    start_up_repair.start(store)
                # Deletes older than RESTORE_DAYS go for good (also after each delete).
                threading.Thread(target=store.purge, name="history-purge", daemon=True).start()
        return store
