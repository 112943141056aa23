"""Deleting, restoring and purging records, and the audit trail of who did which.

A delete hides a record (soft delete); an admin can restore it for `RESTORE_DAYS`; then
the purge removes the row and its image for good. Only the owner or an admin may delete:
the store refuses anyone else (`NotAllowed`), whatever the page offered. Each delete,
restore and purge (and each regeneration, see `spending`) is written to the `audit`
table in the same transaction as the change it records.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import SQLAlchemyError

from core.auth import LOCAL_USER
from core.history import schema
from core.history.errors import HistoryError
from core.history.record import HistoryRecord, readable_time
from core.history.storage import Storage

log = logging.getLogger(__name__)

# A deleted record can be restored by an admin this long; then it is purged for good.
RESTORE_DAYS = 7
RESTORE_SECONDS = RESTORE_DAYS * 86_400.0
SYSTEM_ACTOR = "system"  # the actor of purges in the audit trail


class NotAllowed(HistoryError):  # noqa: N818 - reads as the answer: not allowed
    """The visitor may not do this to this record (the store refuses, not only the page)."""


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


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def write_audit(
    conn: Any,
    actor: str,
    action: str,
    record_id: str,
    owner: str | None,
    prompt: str | None,
    at: float | None = None,
) -> None:
    """Add one audit line in `conn`'s transaction (the prompt as a 200-character detail)."""
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


class Trash:
    """Delete, restore, purge and the audit trail, in one `Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def delete(self, record_id: str, *, actor: str = LOCAL_USER, admin: bool = False) -> bool:
        """Hide a record (soft delete) for `actor`; return whether a live record was hidden.

        Only the record's owner or an admin may delete: anyone else gets `NotAllowed`, here
        in the store, whatever the page offered. The image stays until `purge` (an admin can
        `restore` it for RESTORE_DAYS); the delete is written to the audit trail.
        """
        self.storage.check_writable()
        records = schema.records
        try:
            with self.storage.engine.begin() as conn:
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
                    write_audit(conn, actor, "delete", record_id, row.owner, row.prompt, now)
        except SQLAlchemyError as exc:
            raise self.storage.explain(exc, action="delete from") from exc
        self.purge()  # cheap (indexed); keeps old deletes from piling up between restarts
        return bool(hidden)

    def restore(self, record_id: str, *, actor: str, admin: bool) -> bool:
        """Bring back a record deleted less than RESTORE_DAYS ago (admins only)."""
        if not admin:
            raise NotAllowed("Only an admin can restore a deleted image.")
        self.storage.check_writable()
        records = schema.records
        now = time.time()
        try:
            with self.storage.engine.begin() as conn:
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
                write_audit(conn, actor, "restore", record_id, row.owner, row.prompt, now)
        except SQLAlchemyError as exc:
            raise self.storage.explain(exc, action="restore in") from exc
        return True

    def purge(self, *, now: float | None = None) -> int:
        """Remove for good what was deleted more than RESTORE_DAYS ago; return how many."""
        storage = self.storage
        if storage.read_only is not None:
            return 0
        records = schema.records
        cutoff = (time.time() if now is None else now) - RESTORE_SECONDS
        try:
            with storage.engine.begin() as conn:
                rows = conn.execute(
                    select(records.c.id, records.c.owner, records.c.prompt).where(
                        records.c.deleted_at < cutoff
                    )
                ).all()
                for row in rows:
                    conn.execute(records.delete().where(records.c.id == row.id))
                    storage.remove_images(conn, row.id)
                    write_audit(conn, SYSTEM_ACTOR, "purge", row.id, row.owner, row.prompt)
            storage.after_purge([row.id for row in rows])
        except (OSError, SQLAlchemyError) as exc:
            log.warning("history purge skipped: %s", storage.explain(exc, action="purge"))
            return 0
        if rows:
            log.info("purged %d record(s) deleted more than %d days ago", len(rows), RESTORE_DAYS)
        return len(rows)

    def audit_trail(self, *, limit: int = 200) -> list[AuditEntry]:
        """The newest audit entries first (who, what, which record, when)."""
        audit = schema.audit
        try:
            with self.storage.engine.connect() as conn:
                rows = conn.execute(
                    select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
                ).mappings()
                return [
                    AuditEntry(
                        at=readable_time(row["at"]),  # rows are outside input: 0.0 if not a time
                        actor=_text(row["actor"]),
                        action=_text(row["action"]),
                        record_id=_text(row["record_id"]),
                        owner=_text_or_none(row["owner"]),
                        detail=_text_or_none(row["detail"]),
                    )
                    for row in rows
                ]
        except SQLAlchemyError as exc:
            raise self.storage.read_error(exc) from exc

    def deleted(self, *, limit: int = 200) -> list[DeletedRecord]:
        """Records deleted in the last RESTORE_DAYS, newest delete first (for restore)."""
        records = schema.records
        since = time.time() - RESTORE_SECONDS
        try:
            with self.storage.engine.connect() as conn:
                rows = conn.execute(
                    select(records)
                    .where(records.c.deleted_at >= since)
                    .order_by(records.c.deleted_at.desc())
                    .limit(limit)
                ).mappings()
                return [
                    DeletedRecord(
                        record=HistoryRecord.from_mapping(row),
                        deleted_at=readable_time(row["deleted_at"]),
                        deleted_by=_text(row["deleted_by"]),
                    )
                    for row in rows
                ]
        except SQLAlchemyError as exc:
            raise self.storage.read_error(exc) from exc
