"""What each owner spent and holds: the counts and reservations behind the daily limit.

Made today: saved records (deleted ones too: deleting gives nothing back) and each
Regenerate & verify, which makes an image that is not saved (`note_regenerate`, written
to the audit trail). Held: places reserved by requests still running (`reserve`).

`reserve` counts and inserts in one transaction that no other reservation of the same
owner runs beside, in any process (the engine's `owner_transaction`: SQLite's
`BEGIN IMMEDIATE`, a PostgreSQL advisory lock per owner). The counts are one statement,
so they see one snapshot even while a save converts a place next to them. Saving a
record or noting a regeneration against a reservation converts one place in the same
transaction as the row; `release` gives back the rest; a reservation nobody releases
ends at its `expires_at`.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from core.history import schema
from core.history.errors import HistoryError, quote
from core.history.record import HistoryRecord
from core.history.storage import Storage
from core.history.trash import write_audit
from core.limits import DAY, Allowance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reservation:
    """`places` images of `owner`'s daily allowance, held until saved, released or expired."""

    id: str
    owner: str
    places: int
    expires_at: float


def _usage_query(owner: str, since: float, now: float) -> Any:
    """(made, held) for `owner` in one statement: one snapshot of both."""
    records, audit, reservations = schema.records, schema.audit, schema.reservations
    saved = (
        select(func.count())
        .select_from(records)
        .where(records.c.owner == owner, records.c.created_at >= since)
        .scalar_subquery()
    )
    regenerated = (
        select(func.count())
        .select_from(audit)
        .where(audit.c.actor == owner, audit.c.action == "regenerate", audit.c.at >= since)
        .scalar_subquery()
    )
    held = (
        select(func.coalesce(func.sum(reservations.c.places), 0))
        .where(reservations.c.owner == owner, reservations.c.expires_at > now)
        .scalar_subquery()
    )
    return select(saved + regenerated, held)


def spend(conn: Any, reservation: Reservation | None) -> None:
    """Convert one place of `reservation` in `conn`'s transaction (the caller's row — a
    record or a regeneration — counts from now on); the last place removes it."""
    if reservation is None:
        return
    reservations = schema.reservations
    mine = reservations.c.id == reservation.id
    conn.execute(
        update(reservations)
        .where(mine, reservations.c.places > 0)
        .values(places=reservations.c.places - 1)
    )
    conn.execute(delete(reservations).where(mine, reservations.c.places <= 0))


class Spending:
    """The spending counts and reservations of one `Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def usage(self, owner: str, since: float, *, now: float | None = None) -> tuple[int, int]:
        """(made, held): images `owner` made since `since` (see `made_since`), and places
        their running requests hold (live reservations)."""
        now = time.time() if now is None else now
        try:
            with self.storage.engine.connect() as conn:
                made, held = conn.execute(_usage_query(owner, since, now)).one()
        except SQLAlchemyError as exc:
            raise self.storage.read_error(exc) from exc
        return int(made), int(held)

    def made_since(self, owner: str, since: float) -> int:
        """Images `owner` made since `since` (Unix time): saved records, deleted ones
        included (deleting gives nothing back), plus regenerations (`note_regenerate`).
        The daily limit counts what was spent."""
        return self.usage(owner, since)[0]

    def reserve(
        self,
        owner: str,
        count: int,
        limit: int,
        day_start: float,
        *,
        now: float | None = None,
        hold_seconds: float,
    ) -> Reservation:
        """Hold `count` places of `owner`'s `limit` for the day from `day_start`, if they fit.

        Made since `day_start` plus places held by live reservations plus `count` must not
        exceed `limit`; checked and inserted atomically (see the module docstring). Raise
        `core.limits.LimitReached` naming the numbers when they do not fit, `HistoryError`
        when the history cannot be written.
        """
        if count < 1 or limit < 1:
            raise ValueError(f"reserve needs count ≥ 1 and limit ≥ 1, not {count} and {limit}")
        self._check_writable()
        now = time.time() if now is None else now
        reservations = schema.reservations
        try:
            with self.storage.owner_transaction(owner) as conn:
                # This owner's expired reservations (a crashed request's) go; others' wait
                # for their owner's next reserve (they no longer count meanwhile).
                conn.execute(
                    delete(reservations).where(
                        reservations.c.owner == owner, reservations.c.expires_at <= now
                    )
                )
                made, held = conn.execute(_usage_query(owner, day_start, now)).one()
                allowance = Allowance(
                    limit=limit,
                    used=int(made) + int(held),
                    held=int(held),
                    resets_at=day_start + DAY,
                )
                allowance.check(count, now)  # raises LimitReached; the transaction rolls back
                reservation = Reservation(
                    id=uuid.uuid4().hex, owner=owner, places=count, expires_at=now + hold_seconds
                )
                conn.execute(
                    insert(reservations).values(
                        id=reservation.id,
                        owner=owner,
                        places=count,
                        created_at=now,
                        expires_at=reservation.expires_at,
                    )
                )
        except SQLAlchemyError as exc:
            raise self.storage.explain(exc, action="hold the daily limit in") from exc
        return reservation

    def release(self, reservation: Reservation | None) -> bool:
        """Give back the places `reservation` still holds; return whether any were held.

        Never raises (it runs in `finally` blocks): when the database cannot be reached the
        reservation ends by itself at its `expires_at`.
        """
        if reservation is None or self.storage.read_only is not None:
            return False
        reservations = schema.reservations
        try:
            with self.storage.engine.begin() as conn:
                gone = conn.execute(
                    delete(reservations).where(reservations.c.id == reservation.id)
                ).rowcount
        except SQLAlchemyError as exc:
            log.warning(
                "reservation %s not released (it ends at its expiry): %s",
                reservation.id,
                self.storage.explain(exc, action="write to"),
            )
            return False
        return bool(gone)

    def held(self, owner: str, *, now: float | None = None) -> int:
        """Places `owner`'s running requests hold now (live reservations)."""
        reservations = schema.reservations
        now = time.time() if now is None else now
        try:
            with self.storage.engine.connect() as conn:
                return conn.execute(
                    select(func.coalesce(func.sum(reservations.c.places), 0)).where(
                        reservations.c.owner == owner, reservations.c.expires_at > now
                    )
                ).scalar_one()
        except SQLAlchemyError as exc:
            raise self.storage.read_error(exc) from exc

    def note_regenerate(
        self, actor: str, record: HistoryRecord, *, reservation: Reservation | None = None
    ) -> None:
        """Record that `actor` regenerated `record` (Regenerate & verify makes an image that
        is not saved): it counts toward their daily limit and shows in the audit trail. A
        `reservation` gives up one place in the same transaction."""
        self.storage.check_writable()
        try:
            with self.storage.engine.begin() as conn:
                write_audit(conn, actor, "regenerate", record.id, record.owner, record.prompt)
                spend(conn, reservation)
        except SQLAlchemyError as exc:
            raise self.storage.explain(exc, action="write to") from exc

    def _check_writable(self) -> None:
        if self.storage.read_only is not None:
            raise HistoryError(
                "This history is read-only, so the daily limit cannot be held and nothing "
                f"was generated ({quote(self.storage.read_only)}). Make "
                f"{quote(self.storage.where)} writable, or point {self.storage.setting} "
                "elsewhere."
            )
