"""The history store: rows through SQLAlchemy Core, image bytes through `blobs`.

One `HistoryStore` per database URL and process (`open_store`), thread-safe: every call
takes a pooled connection for one short transaction. The same code serves SQLite (the
local default, a file under `SD_DATA_DIR`) and PostgreSQL (`SD_HISTORY_URL`).

Every error leaves here as a `HistoryError` in plain words, with the database named by
its URL *without* the password (`describe_url`): messages reach the page and the log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, or_, select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from core import metadata
from core.auth import LOCAL_USER
from core.history import blobs as blob_store
from core.history import schema
from core.history.blobs import FileBlobs, TableBlobs, placeholder_image
from core.history.engine import _probe_writable, make_engine
from core.history.errors import (  # re-exported: the store's public names stay here too
    HistoryError,
    PartialSaveError,
    _explain,
    _reason,
    _scrub,
    describe_url,
    parse_url,
    quote,
)
from core.history.record import HistoryRecord

log = logging.getLogger(__name__)

DB_NAME = "history.sqlite3"
PAGE_SIZE = 24
# A temporary or orphan file younger than this may belong to a save still running in
# another process; start-up repair leaves it alone.
ORPHAN_GRACE_SECONDS = 600.0
# A deleted record can be restored by an admin this long; then it is purged for good.
RESTORE_DAYS = 7
RESTORE_SECONDS = RESTORE_DAYS * 86_400.0
SYSTEM_ACTOR = "system"  # the actor of purges in the audit trail


class NotAllowed(HistoryError):  # noqa: N818 - reads as the answer: not allowed
    """The visitor may not do this to this record (the store refuses, not only the page)."""


__all__ = [
    "DB_NAME",
    "PAGE_SIZE",
    "HistoryError",
    "HistoryStore",
    "NotAllowed",
    "Page",
    "PartialSaveError",
    "describe_url",
    "open_store",
    "parse_url",
]


# --- the store --------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit trail: `actor` did `action` to `record_id` (of `owner`) at `at`."""

    at: float
    actor: str
    action: str
    record_id: str
    owner: str | None
    detail: str | None


@dataclass(frozen=True)
class DeletedRecord:
    """A record deleted recently enough to be restored."""

    record: HistoryRecord
    deleted_at: float
    deleted_by: str

    @property
    def purge_at(self) -> float:
        return self.deleted_at + RESTORE_SECONDS


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
class StoredImage:
    """A record's stored PNG, read once: the bytes to download, what to draw, and why not.

    `png` is None when the image is gone or unreachable; `shown` is the PNG itself when it
    is safe to draw, else a placeholder; `problem` says why it is not drawn, in words.
    """

    png: bytes | None
    shown: bytes
    problem: str | None


_IMAGE_MESSAGES = {
    "missing": "The stored image is missing; its settings below still reproduce it.",
    "unreadable": "The stored image is damaged and cannot be shown; its settings below "
    "still reproduce it.",
    "too large": "The stored image was not shown: it is larger than "
    f"{int(blob_store.MAX_STORED_PIXELS**0.5)}×{int(blob_store.MAX_STORED_PIXELS**0.5)} "
    "pixels (a decompression bomb, or not an image from this app), so it was not decoded.",
}


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
        self.read_only: str | None = None  # why saving is impossible, when it is
        self.opened_at = time.monotonic()
        if url is None:
            if data_dir is None:
                raise ValueError("HistoryStore needs a data dir or a URL")
            self.root: Path | None = Path(data_dir)
            self.url = URL.create("sqlite", database=str(self.root / DB_NAME))
            self.where = str(self.root)
        else:
            self.url = parse_url(url) if isinstance(url, str) else url
            self.where = describe_url(self.url)
            self.root = None
            if self.url.get_backend_name() == "sqlite":
                self.root = Path(self.url.database or "").resolve().parent
        self.local = self.url.get_backend_name() == "sqlite"
        self.db_path = Path(self.url.database) if self.local and self.url.database else None
        self.engine = self._open()
        if self.local:
            self.blobs: FileBlobs | TableBlobs = FileBlobs(self.root)
            if self.read_only is None:
                try:  # the same layout as always, even before the first image
                    self.images_dir.mkdir(exist_ok=True)
                    self.thumbs_dir.mkdir(exist_ok=True)
                except OSError as exc:
                    self.engine.dispose()
                    raise self._explain(exc, action="open") from exc
        else:
            self.blobs = TableBlobs(self.engine, schema.images)
        if repair and self.local and self.read_only is None:
            self.repair_report = self.repair()

    def __repr__(self) -> str:  # never the password
        return f"HistoryStore({self.where!r})"

    # opening -------------------------------------------------------------------------------
    def _open(self) -> Engine:
        if self.local:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                _probe_writable(self.root)
            except OSError as exc:
                if not (self.db_path and self.db_path.exists()):
                    raise self._explain(exc, action="open") from exc
                # A read-only disk or folder: the history can still be browsed.
                return self._open_read_only(exc, exc)
        engine = make_engine(self.url)
        try:
            schema.ensure_schema(engine)
            return engine
        except (OSError, SQLAlchemyError) as exc:
            engine.dispose()
            if not self.local and "connection failed" in _reason(exc):
                # The server is not there (or refused us): a second try to read would only
                # wait for the connect timeout again.
                raise self._explain_open(exc) from exc
            # Saving is impossible; browsing may still work (a database user with read
            # rights only, an old file): open for reading and say why nothing is saved.
            return self._open_read_only(exc, exc)

    def _open_read_only(self, failure: BaseException, cause: BaseException) -> Engine:
        reader = make_engine(self.url, read_only=True) if self.local else make_engine(self.url)
        try:
            with reader.connect() as conn:
                usable = schema.has_records_table(conn)
        except (OSError, SQLAlchemyError):
            usable = False
        if not usable:
            reader.dispose()
            raise self._explain_open(failure) from cause
        self.read_only = _scrub(_reason(failure), self.url)
        log.warning("history in %s opened read-only: %s", self.where, self.read_only)
        return reader

    def _explain(self, exc: BaseException, action: str = "save to") -> HistoryError:
        return _explain(exc, self.where, url=self.url, local=self.local, action=action)

    def _explain_open(self, exc: BaseException) -> HistoryError:
        reason = _scrub(_reason(exc), self.url)
        if "not a database" in reason.lower() or "malformed" in reason.lower():
            return HistoryError(
                f"The history database in {quote(self.where)} is damaged ({quote(reason)}). "
                "Nothing was "
                f"changed: move {self.db_path.name if self.db_path else 'it'} aside (or "
                "restore a backup) to start a new history; images are still generated and "
                "can be downloaded, but not saved."
            )
        return self._explain(exc, action="open")

    def _check_writable(self) -> None:
        if self.read_only is not None:
            raise HistoryError(
                f"This history is read-only, so the image was not saved ({quote(self.read_only)}). "
                f"Make {quote(self.where)} writable, or point "
                f"{'SD_DATA_DIR' if self.local else 'SD_HISTORY_URL'} elsewhere. The image "
                "itself is still shown and can be downloaded."
            )

    # local files (SQLite layout) -------------------------------------------------------------
    @property
    def images_dir(self) -> Path:
        return self.blobs.images_dir

    @property
    def thumbs_dir(self) -> Path:
        return self.blobs.thumbs_dir

    def image_path(self, record_id: str) -> Path:
        return self.blobs.image_path(record_id)

    def thumb_path(self, record_id: str) -> Path:
        return self.blobs.thumb_path(record_id)

    # writing ------------------------------------------------------------------------------
    def save(self, image: Any, record: HistoryRecord) -> HistoryRecord:
        """Store `image` with `record` (image and row, all or nothing).

        Return the record with its image hash filled in; raise `HistoryError` when it
        cannot be stored.
        """
        record = dataclasses.replace(record, image_sha256=blob_store.pixel_sha256(image))
        self.put(record, blob_store.encode_png(image, record), blob_store.encode_thumbnail(image))
        return record

    def put(self, record: HistoryRecord, png: bytes | None, thumb: bytes | None) -> None:
        """Store encoded bytes with their row in one step; nothing stays when it fails.

        A missing thumbnail is drawn from the PNG; a missing PNG stores the row alone.
        """
        self._check_writable()
        if png is not None and thumb is None:
            try:
                with blob_store.open_checked(png) as image:
                    thumb = blob_store.encode_thumbnail(image)
            except (OSError, SyntaxError, ValueError):
                thumb = None
        try:
            with self.engine.begin() as conn:
                # Files first (outside SQLite's write lock: BEGIN takes none until the
                # insert), then the row; the commit makes both visible at once.
                self.blobs.put(conn, record.id, png, thumb)
                conn.execute(insert(schema.records).values(dataclasses.asdict(record)))
        except (OSError, SQLAlchemyError) as exc:
            self.blobs.discard(record.id)
            raise self._explain(exc) from exc

    def _insert_ignore(self, conn: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        conn.execute(dialect_insert(schema.records).on_conflict_do_nothing(), list(rows))

    def delete(self, record_id: str, *, actor: str = LOCAL_USER, admin: bool = False) -> bool:
        """Hide a record (soft delete) for `actor`; return whether a live record was hidden.

        Only the record's owner or an admin may delete: anyone else gets `NotAllowed`, here
        in the store, whatever the page offered. The image stays until `purge` (an admin can
        `restore` it for RESTORE_DAYS); the delete is written to the audit trail.
        """
        self._check_writable()
        records = schema.records
        try:
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(records.c.owner, records.c.prompt).where(
                        records.c.id == record_id, records.c.deleted_at.is_(None)
                    )
                ).first()
                if row is None:
                    return False
                if not admin and row.owner != actor:
                    raise NotAllowed(
                        "Only the person who made this image, or an admin, can delete it."
                    )
                now = time.time()
                hidden = conn.execute(
                    records.update()
                    .where(records.c.id == record_id, records.c.deleted_at.is_(None))
                    .values(deleted_at=now, deleted_by=actor)
                ).rowcount
                if hidden:
                    self._audit(conn, actor, "delete", record_id, row.owner, row.prompt, now)
        except SQLAlchemyError as exc:
            raise self._explain(exc, action="delete from") from exc
        self.purge()  # cheap (indexed); keeps old deletes from piling up between restarts
        return bool(hidden)

    def restore(self, record_id: str, *, actor: str, admin: bool) -> bool:
        """Bring back a record deleted less than RESTORE_DAYS ago (admins only)."""
        if not admin:
            raise NotAllowed("Only an admin can restore a deleted image.")
        self._check_writable()
        records = schema.records
        now = time.time()
        try:
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(records.c.owner, records.c.prompt).where(
                        records.c.id == record_id,
                        records.c.deleted_at >= now - RESTORE_SECONDS,
                    )
                ).first()
                if row is None:
                    return False
                conn.execute(
                    records.update()
                    .where(records.c.id == record_id)
                    .values(deleted_at=None, deleted_by=None)
                )
                self._audit(conn, actor, "restore", record_id, row.owner, row.prompt, now)
        except SQLAlchemyError as exc:
            raise self._explain(exc, action="restore in") from exc
        return True

    def purge(self, *, now: float | None = None) -> int:
        """Remove for good what was deleted more than RESTORE_DAYS ago; return how many."""
        if self.read_only is not None:
            return 0
        records = schema.records
        cutoff = (time.time() if now is None else now) - RESTORE_SECONDS
        try:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    select(records.c.id, records.c.owner, records.c.prompt).where(
                        records.c.deleted_at < cutoff
                    )
                ).all()
                for row in rows:
                    conn.execute(records.delete().where(records.c.id == row.id))
                    self.blobs.remove(conn, row.id)
                    self._audit(conn, SYSTEM_ACTOR, "purge", row.id, row.owner, row.prompt)
            if self.local:
                for row in rows:
                    self.blobs.discard(row.id)
        except (OSError, SQLAlchemyError) as exc:
            log.warning("history purge skipped: %s", self._explain(exc, action="purge"))
            return 0
        if rows:
            log.info("purged %d record(s) deleted more than %d days ago", len(rows), RESTORE_DAYS)
        return len(rows)

    @staticmethod
    def _audit(
        conn: Any,
        actor: str,
        action: str,
        record_id: str,
        owner: str | None,
        prompt: str | None,
        at: float | None = None,
    ) -> None:
        conn.execute(
            insert(schema.audit).values(
                at=time.time() if at is None else at,
                actor=actor,
                action=action,
                record_id=record_id,
                owner=owner,
                detail=(prompt or "")[:200],
            )
        )

    def audit_trail(self, *, limit: int = 200) -> list[AuditEntry]:
        """The newest audit entries first (who, what, which record, when)."""
        audit = schema.audit
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
                ).mappings()
                return [
                    AuditEntry(**{k: row[k] for k in AuditEntry.__annotations__}) for row in rows
                ]
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc

    def deleted(self, *, limit: int = 200) -> list[DeletedRecord]:
        """Records deleted in the last RESTORE_DAYS, newest delete first (for restore)."""
        records = schema.records
        since = time.time() - RESTORE_SECONDS
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(records)
                    .where(records.c.deleted_at >= since)
                    .order_by(records.c.deleted_at.desc())
                    .limit(limit)
                ).mappings()
                return [
                    DeletedRecord(
                        record=HistoryRecord.from_mapping(row),
                        deleted_at=row["deleted_at"],
                        deleted_by=row["deleted_by"] or "",
                    )
                    for row in rows
                ]
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc

    def made_since(self, owner: str, since: float) -> int:
        """Images `owner` made since `since` (Unix time): saved records, deleted ones
        included (deleting gives nothing back), plus regenerations (`note_regenerate`).
        The daily limit counts what was spent."""
        records, audit = schema.records, schema.audit
        try:
            with self.engine.connect() as conn:
                saved = conn.execute(
                    select(func.count())
                    .select_from(records)
                    .where(records.c.owner == owner, records.c.created_at >= since)
                ).scalar_one()
                regenerated = conn.execute(
                    select(func.count())
                    .select_from(audit)
                    .where(
                        audit.c.actor == owner,
                        audit.c.action == "regenerate",
                        audit.c.at >= since,
                    )
                ).scalar_one()
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc
        return saved + regenerated

    def note_regenerate(self, actor: str, record: HistoryRecord) -> None:
        """Record that `actor` regenerated `record` (Regenerate & verify makes an image that
        is not saved): it counts toward their daily limit and shows in the audit trail."""
        self._check_writable()
        try:
            with self.engine.begin() as conn:
                self._audit(conn, actor, "regenerate", record.id, record.owner, record.prompt)
        except SQLAlchemyError as exc:
            raise self._explain(exc, action="write to") from exc

    # reading ------------------------------------------------------------------------------
    def _read_error(self, exc: BaseException) -> HistoryError:
        return HistoryError(
            f"Could not read the history in {quote(self.where)}: "
            f"{quote(_scrub(_reason(exc), self.url))}."
        )

    @staticmethod
    def _filters(
        text: str | None, seed: int | None, session_id: str | None, owner: str | None = None
    ) -> list[Any]:
        records = schema.records
        clauses: list[Any] = [records.c.deleted_at.is_(None)]  # deleted: admins' list only
        if owner:
            clauses.append(records.c.owner == owner)
        if text:
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            clauses.append(
                or_(
                    records.c.prompt.ilike(pattern, escape="\\"),
                    records.c.negative_prompt.ilike(pattern, escape="\\"),
                )
            )
        if seed is not None:
            clauses.append(records.c.seed == seed)
        if session_id:
            clauses.append(records.c.session_id == session_id)
        return clauses

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
        records = schema.records
        clauses = self._filters(text, seed, session_id, owner)
        try:
            with self.engine.connect() as conn:
                total = conn.execute(
                    select(func.count()).select_from(records).where(*clauses)
                ).scalar_one()
                pages = max(1, -(-total // page_size))
                page = min(max(page, 1), pages)
                rows = conn.execute(
                    select(records)
                    .where(*clauses)
                    .order_by(records.c.created_at.desc(), records.c.id.desc())
                    .limit(page_size)
                    .offset((page - 1) * page_size)
                ).mappings()
                found = tuple(HistoryRecord.from_mapping(row) for row in rows)
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc
        return Page(records=found, total=total, page=page, page_size=page_size)

    def iter_records(self, *, batch: int = 500) -> Iterator[HistoryRecord]:
        """Every live record, oldest first, read in batches (for copies and exports).

        Deleted records are left out: a copy must not bring them back to life, and an
        export holds what the gallery shows.
        """
        records = schema.records
        after: tuple[float, str] | None = None
        while True:
            query = (
                select(records)
                .where(records.c.deleted_at.is_(None))
                .order_by(records.c.created_at, records.c.id)
                .limit(batch)
            )
            if after is not None:
                query = query.where(
                    or_(
                        records.c.created_at > after[0],
                        (records.c.created_at == after[0]) & (records.c.id > after[1]),
                    )
                )
            try:
                with self.engine.connect() as conn:
                    rows = [HistoryRecord.from_mapping(r) for r in conn.execute(query).mappings()]
            except SQLAlchemyError as exc:
                raise self._read_error(exc) from exc
            yield from rows
            if len(rows) < batch:
                return
            after = (rows[-1].created_at, rows[-1].id)

    def ids(self, record_ids: Sequence[str]) -> set[str]:
        """Which of `record_ids` are stored."""
        if not record_ids:
            return set()
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    select(schema.records.c.id).where(schema.records.c.id.in_(list(record_ids)))
                ).scalars()
            )

    def get(self, record_id: str, *, include_deleted: bool = False) -> HistoryRecord | None:
        """The record, or None when there is none (or it is deleted, unless asked for)."""
        records = schema.records
        query = select(records).where(records.c.id == record_id)
        if not include_deleted:
            query = query.where(records.c.deleted_at.is_(None))
        try:
            with self.engine.connect() as conn:
                row = conn.execute(query).mappings().first()
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc
        return None if row is None else HistoryRecord.from_mapping(row)

    def count(self) -> int:
        """Live records (deleted ones waiting for purge are not counted)."""
        records = schema.records
        try:
            with self.engine.connect() as conn:
                return conn.execute(
                    select(func.count()).select_from(records).where(records.c.deleted_at.is_(None))
                ).scalar_one()
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc

    def png_bytes(self, record_id: str) -> bytes | None:
        """The stored PNG exactly as written, or None when it is gone or unreachable."""
        try:
            return self.blobs.png(record_id)
        except SQLAlchemyError as exc:
            log.warning("could not read the image of %s: %s", record_id, self._read_error(exc))
            return None

    def thumbnails(self, record_ids: Sequence[str]) -> dict[str, bytes]:
        """Thumbnail bytes per id, a placeholder for each missing, unreadable or huge one."""
        try:
            found = self.blobs.thumbs(list(record_ids))
        except SQLAlchemyError as exc:
            log.warning("could not read thumbnails: %s", self._read_error(exc))
            found = {}
        shown = {}
        for record_id in record_ids:
            data = found.get(record_id)
            if data is None:
                shown[record_id] = placeholder_image()
                continue
            problem = blob_store.image_problem(data, expected_format="WEBP")
            shown[record_id] = (
                data if problem is None else placeholder_image(text=f"image {problem}")
            )
        return shown

    def thumbnail(self, record_id: str) -> bytes:
        """Thumbnail bytes for the grid, or a placeholder when missing or unreadable."""
        return self.thumbnails([record_id])[record_id]

    def stored_image(self, record_id: str) -> StoredImage:
        """The stored PNG with what to draw for it, from one read (never raises)."""
        data = self.png_bytes(record_id)
        if data is None:
            return StoredImage(None, placeholder_image(512), _IMAGE_MESSAGES["missing"])
        problem = blob_store.image_problem(data, expected_format="PNG", verify=True)
        if problem is None:
            return StoredImage(data, data, None)
        return StoredImage(
            data, placeholder_image(512, f"image {problem}"), _IMAGE_MESSAGES[problem]
        )

    # repair -------------------------------------------------------------------------------
    def repair(self, *, grace_seconds: float = ORPHAN_GRACE_SECONDS) -> dict[str, int]:
        """Make files and rows agree after a crash (local files only); return counts.

        Old temporary files are removed; a PNG without a row gets its row back from the
        record JSON it carries (or is removed when it has none); a missing thumbnail is
        redrawn from its PNG. Rows whose PNG is gone are kept and counted.
        """
        report = {"temp_removed": 0, "rows_restored": 0, "files_removed": 0, "thumbs_rebuilt": 0}
        if not self.local or self.read_only is not None:
            return report
        now = time.time()
        with self.engine.connect() as conn:
            ids = set(conn.execute(select(schema.records.c.id)).scalars())
        try:
            # One directory listing per folder, no stat per file: start-up stays fast at
            # tens of thousands of records. Only temporaries and orphans are looked at.
            pngs = _listing(self.images_dir)
            thumbs = _listing(self.thumbs_dir)
            for name, path in [*pngs.items(), *thumbs.items()]:
                if (
                    name.endswith(blob_store.TMP_SUFFIX)
                    and now - os.stat(path).st_mtime > grace_seconds
                ):
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
                    with self.engine.begin() as conn:
                        self._insert_ignore(conn, [dataclasses.asdict(record)])
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
            log.info("history repair in %s: %s", self.where, report)
        return report

    def _record_from_file(self, path: Path) -> HistoryRecord | None:
        from PIL import Image

        try:
            chunks = metadata.read_png_text(path.read_bytes())
            return HistoryRecord.from_mapping(json.loads(chunks[metadata.RECORD_KEY]))
        except (
            metadata.MetadataError,
            Image.DecompressionBombError,
            KeyError,
            TypeError,
            ValueError,
            OSError,
        ):
            return None

    def _rebuild_thumbnail(self, record_id: str) -> None:
        try:
            with blob_store.open_checked(self.image_path(record_id).read_bytes()) as image:
                blob_store._write_atomic(
                    self.thumb_path(record_id), blob_store.encode_thumbnail(image)
                )
        except (OSError, SyntaxError, ValueError) as exc:
            log.warning("could not redraw the thumbnail of %s: %s", record_id, exc)


def _listing(folder: Path) -> dict[str, str]:
    """File name → path for every file one level below `folder` (the id-prefix folders)."""
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    with os.scandir(folder) as prefixes:
        for prefix in prefixes:
            if prefix.is_dir():
                with os.scandir(prefix.path) as entries:
                    found.update({e.name: e.path for e in entries if e.is_file()})
    return found


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
            if store.local and store.read_only is None:
                # Repair lists every image folder (~0.2 s at 10,000 records): run it after
                # the first page render instead of before or beside it (beside it, it held
                # the GIL and slowed that render ~1.5x). It is safe next to saves: files
                # younger than the grace period are left alone, rows are only added.
                threading.Thread(target=_repair_quietly, args=(store,), daemon=True).start()
            if store.read_only is None:
                # Deletes older than RESTORE_DAYS go for good (also after each delete).
                threading.Thread(target=store.purge, name="history-purge", daemon=True).start()
        return store


REPAIR_DELAY_SECONDS = 2.0  # a first render takes ~0.1 s; repair waits until it is drawn


def _repair_quietly(store: HistoryStore) -> None:
    time.sleep(REPAIR_DELAY_SECONDS)
    try:
        store.repair_report = store.repair()
    except (OSError, SQLAlchemyError) as exc:  # a broken dir shows up on the next real call
        log.warning("history repair skipped: %s", exc)
