"""Where a history lives (one interface, one file per engine): see `base`."""

from __future__ import annotations

from sqlalchemy.engine import URL

from core.history.storage.base import Storage, looks_damaged
from core.history.storage.postgresql import PostgresTables
from core.history.storage.sqlite_files import SqliteFiles

__all__ = ["PostgresTables", "SqliteFiles", "Storage", "looks_damaged", "open_storage"]


def open_storage(url: URL, where: str) -> Storage:
    """The storage for `url` (SQLite: files beside it; else PostgreSQL), opened."""
    kind = SqliteFiles if url.get_backend_name() == "sqlite" else PostgresTables
    storage = kind(url, where)
    storage.open()
    return storage
