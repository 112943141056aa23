"""A local history: one SQLite file, and the image files in the folder beside it.

Layout (as it always was)::

    history.sqlite3            the rows (WAL mode)
    images/<id[:2]>/<id>.png   the PNG with its `parameters` and record chunks
    thumbs/<id[:2]>/<id>.webp  256 px thumbnail for the gallery grid
    inputs/<sha[:2]>/<sha>.png an uploaded source or an inpaint mask, named by its SHA-256

A save writes both files to temporary names, fsyncs and renames them, and only then
commits the row; when the row does not commit the files are removed at once. A crash in
between leaves an orphan, which start-up repair (`core.history.repair`) turns back into a
row from the record JSON the PNG carries. Files of a purged record go after the purge
commits. A damaged file is reported as damaged, with what to do, and never overwritten.
"""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path

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
    dialect_insert = staticmethod(sqlite_insert)
    needs_repair = True

    def __init__(self, url: URL, where: str) -> None:
        super().__init__(url, where)
        self.db_path = Path(url.database) if url.database else None
        self.root = Path(url.database or "").resolve().parent
        self.images_dir = self.root / "images"
        self.thumbs_dir = self.root / "thumbs"
        self.inputs_dir = self.root / "inputs"

    # opening -------------------------------------------------------------------------------
    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        engines._probe_writable(self.root)

    def _has_database(self) -> bool:
        return bool(self.db_path and self.db_path.exists())

    def _reader(self) -> Engine:
        return engines.make_engine(self.url, read_only=True)

    def _after_open(self) -> None:
        # The same layout as always, even before the first image.
        self.images_dir.mkdir(exist_ok=True)
        self.thumbs_dir.mkdir(exist_ok=True)

    def _refuse_unusable(self, exc: BaseException) -> None:
        # A write that failed on a sound file is a read-only file, folder or disk: browse
        # it. On a damaged one a migration fails in odd ways ("table images already
        # exists" once the version row reads as NULL): say damaged, not read-only.
        if looks_damaged(_reason(exc)) or isinstance(exc, UnicodeError) or self._damage():
            raise self.damaged(exc) from exc

    def _damage(self) -> str | None:
        """What SQLite's own check finds wrong with the file (None when it looks sound).

        Runs only after an open failed; `quick_check` reads the file once, read-only.
        """
        if not self._has_database():
            return None
        uri = f"file:{urllib.parse.quote(str(self.db_path))}?mode=ro"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
                found = [str(row[0]) for row in conn.execute("PRAGMA quick_check(3)")]
        except sqlite3.OperationalError as exc:  # locked, unreadable: not known damaged
            return str(exc) if looks_damaged(str(exc)) else None
        except (sqlite3.DatabaseError, UnicodeError) as exc:
            return str(exc) or type(exc).__name__
        return None if found == ["ok"] else "; ".join(found)

    # errors ----------------------------------------------------------------------------------
    def damaged(self, exc: BaseException) -> HistoryError:
        """The file is damaged: say so, that nothing was changed, and what to do."""
        reason = _reason(exc)
        if not looks_damaged(reason):
            reason += f"; SQLite's check: {self._damage() or 'database disk image is malformed'}"
        name = self.db_path.name if self.db_path else "the database file"
        return HistoryError(
            f"The history database in {quote(self.where)} is damaged ({quote(reason)}). "
            f"Nothing was changed: move {name} aside, with its -wal and -shm files if there "
            "are any (or restore a backup), to start a new history; start-up repair then "
            "lists the images in this folder again from the records they carry. Until then "
            "images are still generated and can be downloaded, but not saved."
        )

    def explain_open(self, exc: BaseException) -> HistoryError:
        if looks_damaged(_reason(exc)) or isinstance(exc, UnicodeError):
            return self.damaged(exc)
        return super().explain_open(exc)

    def read_error(self, exc: BaseException) -> HistoryError:
        if looks_damaged(_reason(exc)):
            return self.damaged(exc)
        return super().read_error(exc)

    # rows ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def owner_transaction(self, owner: str) -> Iterator[Connection]:
        # BEGIN IMMEDIATE takes SQLite's one write lock at the start: every process and
        # thread writing this file waits for it (busy_timeout), so what is counted inside
        # cannot change before the insert. Coarser than per owner, and as short.
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn

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

    # sources and masks -------------------------------------------------------------------
    def input_path(self, sha256: str) -> Path:
        return self.inputs_dir / sha256[:2] / f"{sha256}.png"

    def put_input(self, conn: Connection, sha256: str, png: bytes) -> None:
        # Written before the row commits, like the images; named by the content, so a file
        # already there holds these very bytes (and one left by a failed save is harmless).
        if not blobs.valid_sha256(sha256):
            raise ValueError("an input is named by its SHA-256 only")
        path = self.input_path(sha256)
        if not path.exists():
            blobs._write_atomic(path, png)

    def input_png(self, sha256: str) -> bytes | None:
        if not blobs.valid_sha256(sha256):  # a file name is only ever built from a checked hash
            return None
        try:
            return self.input_path(sha256).read_bytes()
        except OSError:
            return None

    # repair ----------------------------------------------------------------------------------
    def repair(self, *, grace_seconds: float) -> dict[str, int]:
        return repair_files(self, grace_seconds=grace_seconds)
