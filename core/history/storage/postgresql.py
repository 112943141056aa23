"""A history in PostgreSQL: the rows and the image bytes in one database.

The PNG and thumbnail go to the `images` table in the same transaction as the row: one
service holds everything, no half record can exist, and there is nothing to repair after
a crash. Several app processes (replicas) may share it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.engine import Connection, Engine

from core.history import schema
from core.history.engine import make_engine
from core.history.errors import _reason
from core.history.storage.base import Storage

# pg_advisory_xact_lock(class, key) of the daily allowance: the class is a constant of this
# app, the key a hash of the owner. The two-key space never meets the one-key lock of
# schema upgrades (`schema.LOCK_KEY`).
OWNER_LOCK_CLASS = 0x5D35_0DA7


def owner_lock_key(owner: str) -> int:
    """A signed 32-bit key for `owner`, the same in every process (unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(owner.encode()).digest()[:4], "big", signed=True)


class PostgresTables(Storage):
    """PostgreSQL, image bytes in the `images` table (`SD_HISTORY_URL`)."""

    local = False
    setting = "SD_HISTORY_URL"
    dialect_insert = staticmethod(postgresql_insert)

    def _prepare(self) -> None:
        """Nothing to make: the server holds everything."""

    def _has_database(self) -> bool:
        return True

    def _reader(self) -> Engine:
        return make_engine(self.url)  # read rights are the server's business

    def _after_open(self) -> None:
        """Nothing to make: the tables came with the schema."""

    def _refuse_unusable(self, exc: BaseException) -> None:
        if "connection failed" in _reason(exc):
            # The server is not there (or refused us): a second try to read would only
            # wait for the connect timeout again.
            raise self.explain_open(exc) from exc

    # rows ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def owner_transaction(self, owner: str) -> Iterator[Connection]:
        # A transaction-level advisory lock per owner: one person's requests queue for a
        # moment, other people's never wait, and the lock goes with the commit or rollback
        # (also through PgBouncer-style poolers in transaction mode). SERIALIZABLE would
        # need a retry loop for its serialization failures under exactly this contention.
        with self.engine.begin() as conn:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:kind, :key)"),
                {"kind": OWNER_LOCK_CLASS, "key": owner_lock_key(owner)},
            )
            yield conn

    # image bytes -----------------------------------------------------------------------------
    def put_images(
        self, conn: Connection, record_id: str, png: bytes | None, thumb: bytes | None
    ) -> None:
        if png is not None:
            conn.execute(schema.images.insert().values(id=record_id, png=png, thumb=thumb))

    def discard(self, record_id: str) -> None:
        """Nothing to do: the bytes rolled back with their row."""

    def remove_images(self, conn: Connection, record_id: str) -> None:
        conn.execute(schema.images.delete().where(schema.images.c.id == record_id))

    def after_purge(self, record_ids: Sequence[str]) -> None:
        """Nothing to do: the bytes went with the purge's transaction."""

    def png(self, record_id: str) -> bytes | None:
        with self.engine.connect() as conn:
            data = conn.execute(
                select(schema.images.c.png).where(schema.images.c.id == record_id)
            ).scalar()
        return bytes(data) if data else None

    def put_input(self, conn: Connection, sha256: str, png: bytes) -> None:
        conn.execute(
            postgresql_insert(schema.inputs)
            .values(sha256=sha256, png=png)
            .on_conflict_do_nothing()  # the same bytes, kept by an earlier record
        )

    def input_png(self, sha256: str) -> bytes | None:
        with self.engine.connect() as conn:
            data = conn.execute(
                select(schema.inputs.c.png).where(schema.inputs.c.sha256 == sha256)
            ).scalar()
        return bytes(data) if data else None

    def thumbs(self, record_ids: list[str]) -> dict[str, bytes]:
        if not record_ids:
            return {}
        images = schema.images
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(images.c.id, images.c.thumb).where(images.c.id.in_(record_ids))
            )
            return {row.id: bytes(row.thumb) for row in rows if row.thumb is not None}
