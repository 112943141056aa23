"""What each owner spent: the counts behind the daily limit (`core.limits`).

Saved records count (deleted ones too: deleting gives nothing back), and so does each
Regenerate & verify, which makes an image that is not saved (`note_regenerate`, written
to the audit trail).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from core.history import schema
from core.history.record import HistoryRecord
from core.history.storage import Storage
from core.history.trash import write_audit


class Spending:
    """The spending counts of one `Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def made_since(self, owner: str, since: float) -> int:
        """Images `owner` made since `since` (Unix time): saved records, deleted ones
        included (deleting gives nothing back), plus regenerations (`note_regenerate`).
        The daily limit counts what was spent."""
        records, audit = schema.records, schema.audit
        try:
            with self.storage.engine.connect() as conn:
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
            raise self.storage.read_error(exc) from exc
        return saved + regenerated

    def note_regenerate(self, actor: str, record: HistoryRecord) -> None:
        """Record that `actor` regenerated `record` (Regenerate & verify makes an image that
        is not saved): it counts toward their daily limit and shows in the audit trail."""
        self.storage.check_writable()
        try:
            with self.storage.engine.begin() as conn:
                write_audit(conn, actor, "regenerate", record.id, record.owner, record.prompt)
        except SQLAlchemyError as exc:
            raise self.storage.explain(exc, action="write to") from exc
