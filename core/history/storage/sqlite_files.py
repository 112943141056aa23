"""A local history: one SQLite file, and the image files in the folder beside it.

Layout (as it always was)::

    history.sqlite3            the rows (WAL mode)
    images/<id[:2]>/<id>.png   the PNG with its `parameters` and record chunks
    thumbs/<id[:2]>/<id>.webp  256 px thumbnail for the gallery grid

A save writes both files to temporary names, fsyncs and renames them, and only then
commits the row; when the row does not commit the files are removed at once. A crash in
between leaves an orphan, which start-up repair (`core.history.repair`) turns back into a
row from the record JSON the PNG carries. Files of a purged record go after the purge
commits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, Engine

from core.history import blobs
from core.history import engine as engines
from core.history.errors import HistoryError, _reason, quote
from core.history.record import valid_id
from core.history.repair import repair_files
from core.history.storage.base import Storage, looks_damaged


class SqliteFiles(Storage):
    """SQLite + PNG/WebP files under one folder (`SD_DATA_DIR`)."""

    local = True
    setting = "SD_DATA_DIR"
    needs_repair = True

    def __init__(self, url: URL, where: str) -> None:
        super().__init__(url, where)
        self.db_path = Path(url.database) if url.database else None
        self.root = Path(url.database or "").resolve().parent
        self.images_dir = self.root / "images"
        self.thumbs_dir = self.root / "thumbs"

    # opening -------------------------------------------------------------------------------
    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        engines._probe_writable(self.root)

    def _has_database(self) -> bool:
        return bool(self.db_path and self.db_path.exists())

    def _reader(self) -> Engine:
        return engines.make_engine(self.url, read_only=True)

    def _refuse_unusable(self, exc: BaseException) -> None:
        """A write that failed leaves a file that may still be browsed."""

    def _after_open(self) -> None:
        # The same layout as always, even before the first image.
        self.images_dir.mkdir(exist_ok=True)
        self.thumbs_dir.mkdir(exist_ok=True)

    # errors ----------------------------------------------------------------------------------
    def explain_open(self, exc: BaseException) -> HistoryError:
        reason = _reason(exc)
        if looks_damaged(reason):
            return HistoryError(
                f"The history database in {quote(self.where)} is damaged ({quote(reason)}). "
                "Nothing was changed: move "
                f"{self.db_path.name if self.db_path else 'it'} aside (or restore a backup) to "
                "start a new history; images are still generated and can be downloaded, but "
                "not saved."
            )
        return super().explain_open(exc)

    # rows ------------------------------------------------------------------------------------
    def insert_ignore(
        self, conn: Connection, table: Any, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        conn.execute(sqlite_insert(table).on_conflict_do_nothing(), list(rows))

    # image files -----------------------------------------------------------------------------
    def image_path(self, record_id: str) -> Path:
        return self.images_dir / record_id[:2] / f"{record_id}.png"

    def thumb_path(self, record_id: str) -> Path:
        return self.thumbs_dir / record_id[:2] / f"{record_id}.webp"

    def put_images(
        self, conn: Connection, record_id: str, png: bytes | None, thumb: bytes | None
    ) -> None:
        # Files first (outside SQLite's write lock: BEGIN takes none until the insert),
        # then the row; the commit makes both visible at once.
        if png is not None:
            blobs._write_atomic(self.image_path(record_id), png)
        if thumb is not None:
            blobs._write_atomic(self.thumb_path(record_id), thumb)

    def remove_images(self, conn: Connection, record_id: str) -> None:
        """Files go after the purge commits (`after_purge`): a rollback must find them."""

    def discard(self, record_id: str) -> None:
        for path in (self.image_path(record_id), self.thumb_path(record_id)):
            with contextlib.suppress(OSError):  # else left for start-up repair
                path.unlink(missing_ok=True)

    def after_purge(self, record_ids: Sequence[str]) -> None:
        for record_id in record_ids:
            self.discard(record_id)

    def png(self, record_id: str) -> bytes | None:
        if not valid_id(record_id):  # a file name is only ever built from a checked id
            return None
        try:
            return self.image_path(record_id).read_bytes()
        except OSError:
            return None

    def thumbs(self, record_ids: list[str]) -> dict[str, bytes]:
        found = {}
        for record_id in filter(valid_id, record_ids):
            try:
                found[record_id] = self.thumb_path(record_id).read_bytes()
            except OSError:
                continue
        return found

    # repair ----------------------------------------------------------------------------------
    def repair(self, *, grace_seconds: float) -> dict[str, int]:
        return repair_files(self, grace_seconds=grace_seconds)
