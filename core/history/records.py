"""The records of a history: save, read one, page through, search, count, and their images.

Every call takes a pooled connection for one short transaction; failures leave as
`HistoryError` in plain words (the storage words them). Image bytes go through the
`Storage`, wherever the engine keeps them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, or_, select
from sqlalchemy.exc import SQLAlchemyError

from core.history import blobs as blob_store
from core.history import schema
from core.history.blobs import placeholder_image
from core.history.errors import HistoryError, quote
from core.history.record import HistoryRecord, valid_id
from core.history.spending import Reservation, spend
from core.history.storage import Storage

log = logging.getLogger(__name__)

PAGE_SIZE = 24
INPUT_FIELDS = ("source_record", "source_sha256", "mask_sha256")  # NULL when empty


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


class Records:
    """Saving and reading records (and their images) in one `Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    # writing ---------------------------------------------------------------------------------
    def save(
        self, image: Any, record: HistoryRecord, *, reservation: Reservation | None = None
    ) -> HistoryRecord:
        """Store `image` with `record` (image and row, all or nothing).

        Return the record with its image hash filled in; raise `HistoryError` when it
        cannot be stored. See `put` for `reservation`.
        """
        record = dataclasses.replace(record, image_sha256=blob_store.pixel_sha256(image))
        png, thumb = blob_store.encode_png(image, record), blob_store.encode_thumbnail(image)
        self.put(record, png, thumb, reservation=reservation)
        return record

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

        A missing thumbnail is drawn from the PNG; a missing PNG stores the row alone. With
        a `reservation` (of the record's owner) one of its places becomes this record in
        the same transaction: the daily limit counts it once, as made. `inputs` are the PNG
        bytes of the record's own source and mask (kept once per SHA-256, which the record
        names).
        """
        if reservation is not None and reservation.owner != record.owner:
            raise ValueError("a record is saved against its own owner's reservation only")
        storage = self.storage
        storage.check_writable()
        if not valid_id(record.id):  # it names files: nothing outside the history's folders
            raise HistoryError(
                f"Not saved: {quote(record.id[:80])} is not a record id this app makes."
            )
        if png is not None and thumb is None:
            try:
                with blob_store.open_checked(png) as image:
                    thumb = blob_store.encode_thumbnail(image)
            except (OSError, SyntaxError, ValueError):
                thumb = None
        named = {record.source_sha256, record.mask_sha256} - {""}
        kept = {blob_store.sha256_of(data): data for data in inputs}
        if not named <= set(kept):  # a record never names bytes that were not kept with it
            raise HistoryError("Not saved: the source or mask it names came without its bytes.")
        row = dataclasses.asdict(record)
        for name in INPUT_FIELDS:  # NULL, as rows from before 0005, when there is none
            row[name] = row[name] or None
        try:
            with storage.engine.begin() as conn:
                for sha256 in sorted(named):
                    storage.put_input(conn, sha256, kept[sha256])
                storage.put_images(conn, record.id, png, thumb)
                conn.execute(insert(schema.records).values(row))
                spend(conn, reservation)
        except (OSError, SQLAlchemyError) as exc:
            storage.discard(record.id)
            raise storage.explain(exc) from exc

    # reading ---------------------------------------------------------------------------------
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
        clauses = _filters(text, seed, session_id, owner)
        try:
            with self.storage.engine.connect() as conn:
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
            raise self.storage.read_error(exc) from exc
        return Page(records=found, total=total, page=page, page_size=page_size)

    def iter_records(self, *, batch: int = 500) -> Iterator[HistoryRecord]:
        """Every live record, oldest first, read in batches (for copies and exports).

        Deleted records are left out: a copy must not bring them back to life, and an
        export holds what the gallery shows.
        """
        records = schema.records
        # The key of the last row read, as stored: a time that reads as 0.0 (text, NaN, …)
        # must still sort where the database sorts it, or a batch would start over.
        after: tuple[Any, Any] | None = None
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
                with self.storage.engine.connect() as conn:
                    rows = conn.execute(query).mappings().all()
            except SQLAlchemyError as exc:
                raise self.storage.read_error(exc) from exc
            yield from (HistoryRecord.from_mapping(row) for row in rows)
            if len(rows) < batch:
                return
            after = (rows[-1]["created_at"], rows[-1]["id"])

    def ids(self, record_ids: Sequence[str]) -> set[str]:
        """Which of `record_ids` are stored."""
        if not record_ids:
            return set()
        with self.storage.engine.connect() as conn:
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
            with self.storage.engine.connect() as conn:
                row = conn.execute(query).mappings().first()
        except SQLAlchemyError as exc:
            raise self.storage.read_error(exc) from exc
        return None if row is None else HistoryRecord.from_mapping(row)

    def count(self) -> int:
        """Live records (deleted ones waiting for purge are not counted)."""
        records = schema.records
        try:
            with self.storage.engine.connect() as conn:
                return conn.execute(
                    select(func.count()).select_from(records).where(records.c.deleted_at.is_(None))
                ).scalar_one()
        except SQLAlchemyError as exc:
            raise self.storage.read_error(exc) from exc

    # images ----------------------------------------------------------------------------------
    def input_png(self, sha256: str) -> bytes | None:
        """A kept source's or mask's bytes, or None when they are gone, unreachable, or no
        longer the bytes their name says (an edited file or row is never used)."""
        if not blob_store.valid_sha256(sha256):
            return None
        try:
            data = self.storage.input_png(sha256)
        except SQLAlchemyError as exc:
            log.warning("could not read input %s: %s", sha256[:12], self.storage.read_error(exc))
            return None
        if data is None or blob_store.sha256_of(data) != sha256:
            return None
        return data

    def png_bytes(self, record_id: str) -> bytes | None:
        """The stored PNG exactly as written, or None when it is gone or unreachable."""
        try:
            return self.storage.png(record_id)
        except SQLAlchemyError as exc:
            log.warning(
                "could not read the image of %s: %s", record_id, self.storage.read_error(exc)
            )
            return None

    def thumbnails(self, record_ids: Sequence[str]) -> dict[str, bytes]:
        """Thumbnail bytes per id, a placeholder for each missing, unreadable or huge one."""
        try:
            found = self.storage.thumbs(list(record_ids))
        except SQLAlchemyError as exc:
            log.warning("could not read thumbnails: %s", self.storage.read_error(exc))
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
