"""Named prompt styles kept in the history database: each person's own, and the ones an
admin published to everyone.

A person sees their own styles and the published ones; their own shadows a published one
of the same name. Only admins publish or withdraw a style (the store refuses anyone else,
whatever the page offered), and only the owner or an admin deletes one. Every style is
checked by `core.styles.Style` on the way in and again on the way out (rows are outside
input: an edited database may hold anything). Writes replace a style of the same name
(A1111's styles.csv keeps the last one too); the engine's own upsert does it
(`Storage.upsert`, one file per engine).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from core.history import schema
from core.history.errors import HistoryError
from core.history.storage import Storage
from core.history.trash import NotAllowed
from core.safe_text import quote
from core.styles import Style, StyleError

log = logging.getLogger(__name__)

MAX_STYLES_PER_OWNER = 500
MAX_STYLES_READ = 2000  # own + published, listed in the generator


@dataclass(frozen=True)
class SavedStyle:
    """A style as stored: whose it is and whether everyone sees it."""

    style: Style
    owner: str
    shared: bool
    updated_at: float

    @property
    def name(self) -> str:
        return self.style.name


class SavedStyles:
    """The styles of one `Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    # reading -----------------------------------------------------------------------------
    def visible(self, owner: str) -> list[SavedStyle]:
        """`owner`'s styles and the published ones, by name; own first for a shared name.

        Rows that are not valid styles (an edited database) are left out and logged.
        """
        styles = schema.styles
        query = (
            select(styles)
            .where(or_(styles.c.owner == owner, styles.c.shared != 0))
            .order_by(styles.c.name, styles.c.id)
            .limit(MAX_STYLES_READ)
        )
        try:
            with self.storage.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except SQLAlchemyError as exc:
            raise self.storage.read_error(exc) from exc
        found: dict[str, SavedStyle] = {}
        for row in rows:
            try:
                style = Style(str(row["name"]), str(row["prompt"]), str(row["negative_prompt"]))
            except StyleError as exc:
                log.warning("style row %s left out: %s", row["id"], exc)
                continue
            saved = SavedStyle(style, str(row["owner"]), bool(row["shared"]), row["updated_at"])
            if style.name not in found or saved.owner == owner:
                found[style.name] = saved
        return sorted(found.values(), key=lambda s: s.name.lower())

    # writing -----------------------------------------------------------------------------
    def save(self, owner: str, style: Style, *, actor: str | None = None) -> None:
        """Keep `style` as `owner`'s, replacing theirs of the same name (its published flag
        stays). `HistoryError` when the history is read-only or `owner` has too many."""
        self.save_many(owner, [style], actor=actor)

    def save_many(self, owner: str, styles: Iterable[Style], *, actor: str | None = None) -> int:
        """Keep each of `styles` as `owner`'s (an import); return how many were written."""
        self.storage.check_writable()
        table = schema.styles
        now = time.time()
        written = 0
        try:
            with self.storage.owner_transaction(owner) as conn:
                names = set(
                    conn.execute(select(table.c.name).where(table.c.owner == owner)).scalars()
                )
                for style in styles:
                    if style.name not in names and len(names) >= MAX_STYLES_PER_OWNER:
                        raise HistoryError(
                            f"You have {MAX_STYLES_PER_OWNER} styles, the most one person "
                            f"keeps; {quote(style.name, 60)} was not saved. Delete some first."
                        )
                    row = {
                        "owner": owner,
                        "name": style.name,
                        "prompt": style.prompt,
                        "negative_prompt": style.negative_prompt,
                        "created_at": now,
                        "updated_at": now,
                        "updated_by": actor or owner,
                    }
                    self.storage.upsert(
                        conn,
                        table,
                        row,
                        key=("owner", "name"),
                        update=("prompt", "negative_prompt", "updated_at", "updated_by"),
                    )
                    names.add(style.name)
                    written += 1
        except SQLAlchemyError as exc:
            raise self.storage.explain(exc) from exc
        return written

    def delete(self, owner: str, name: str, *, actor: str, admin: bool) -> bool:
        """Delete `owner`'s style `name` (the owner or an admin only); return whether one
        was there."""
        if actor != owner and not admin:
            raise NotAllowed("Only its owner or an admin may delete a style.")
        self.storage.check_writable()
        table = schema.styles
        try:
            with self.storage.engine.begin() as conn:
                gone = conn.execute(
                    delete(table).where(and_(table.c.owner == owner, table.c.name == name))
                ).rowcount
        except SQLAlchemyError as exc:
            raise self.storage.explain(exc) from exc
        return bool(gone)

    def publish(self, owner: str, name: str, *, shared: bool, actor: str, admin: bool) -> bool:
        """Publish `owner`'s style `name` to everyone, or withdraw it (admins only); return
        whether the style was there."""
        if not admin:
            raise NotAllowed("Only an admin may publish a style to everyone or withdraw it.")
        self.storage.check_writable()
        table = schema.styles
        try:
            with self.storage.engine.begin() as conn:
                changed = conn.execute(
                    update(table)
                    .where(and_(table.c.owner == owner, table.c.name == name))
                    .values(shared=int(shared), updated_at=time.time(), updated_by=actor)
                ).rowcount
        except SQLAlchemyError as exc:
            raise self.storage.explain(exc) from exc
        return bool(changed)

    def count(self, owner: str) -> int:
        """How many styles `owner` keeps (published ones included)."""
        table = schema.styles
        try:
            with self.storage.engine.connect() as conn:
                return conn.execute(
                    select(func.count()).select_from(table).where(table.c.owner == owner)
                ).scalar_one()
        except SQLAlchemyError as exc:
            raise self.storage.read_error(exc) from exc
