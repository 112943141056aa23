"""Where a history lives: one interface, one file per engine.

The model is InvokeAI's `image_records_base.py`: the store's parts (records, trash and
audit, the daily allowance, start-up repair) talk to a `Storage` and never ask which
engine it is. Everything that differs between the engines is in one file each:

- `sqlite_files.SqliteFiles` — a SQLite file with the PNG and thumbnail files in the
  folder beside it (the local default, `SD_DATA_DIR`);
- `postgresql.PostgresTables` — PostgreSQL with the image bytes in its `images` table
  (`SD_HISTORY_URL`).

A `Storage` is opened once (`open`): it creates or upgrades the schema, or falls back to
reading only when writing is impossible (`read_only` says why). It then holds the
SQLAlchemy engine every part uses, turns failures into `HistoryError`s in plain words,
and keeps the image bytes.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from core.history import schema
from core.history.engine import make_engine
from core.history.errors import HistoryError, _explain, _reason, _scrub, quote

log = logging.getLogger(__name__)

# What SQLite says about a file that is not (or no longer) a sound database.
DAMAGE_WORDS = ("not a database", "malformed", "file is encrypted")


def looks_damaged(reason: str) -> bool:
    """Whether a database error's words say the file is damaged (not merely unwritable)."""
    lowered = reason.lower()
    return any(word in lowered for word in DAMAGE_WORDS)


class Storage(ABC):
    """One history's database and image bytes; see the module docstring for the engines."""

    local: ClassVar[bool]  # a folder on this machine (messages name it and SD_DATA_DIR)
    setting: ClassVar[str]  # the setting that points the history elsewhere
    needs_repair: ClassVar[bool] = False  # files and rows can disagree after a crash
    # The engine's INSERT with ON CONFLICT (SQLite's and PostgreSQL's share that API).
    dialect_insert: ClassVar[Callable[[Any], Any]]
    root: Path | None = None
    db_path: Path | None = None

    def __init__(self, url: URL, where: str) -> None:
        self.url = url
        self.where = where  # for messages and logs: a folder, or the URL without password
        self.read_only: str | None = None  # why saving is impossible, when it is
        self.engine: Engine

    # opening -------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the database at its newest schema, or for reading only (`read_only`).

        Raise `HistoryError` when it can be neither written nor read.
        """
        try:
            self._prepare()
        except OSError as exc:
            if not self._has_database():
                raise self.explain(exc, action="open") from exc
            # A read-only disk or folder: the history can still be browsed.
            self.engine = self._open_read_only(exc)
            return
        engine = make_engine(self.url)
        try:
            schema.ensure_schema(engine)
        # UnicodeError: sqlite3 decoding a damaged file's header; UnknownVersion: a newer
        # app (or damage) left a schema version this one has no migration for.
        except (OSError, SQLAlchemyError, UnicodeError, schema.UnknownVersion) as exc:
            engine.dispose()
            self._refuse_unusable(exc)
            # Saving is impossible; browsing may still work (a database user with read
            # rights only, an old file): open for reading and say why nothing is saved.
            self.engine = self._open_read_only(exc)
            return
        self.engine = engine
        try:
            self._after_open()
        except OSError as exc:
            engine.dispose()
            raise self.explain(exc, action="open") from exc

    def _open_read_only(self, failure: BaseException) -> Engine:
        reader = self._reader()
        try:
            with reader.connect() as conn:
                usable = schema.has_records_table(conn)
        except (OSError, SQLAlchemyError, UnicodeError):
            usable = False
        if not usable:
            reader.dispose()
            raise self.explain_open(failure) from failure
        self.read_only = _scrub(_reason(failure), self.url)
        log.warning("history in %s opened read-only: %s", self.where, self.read_only)
        return reader

    @abstractmethod
    def _prepare(self) -> None:
        """Make what the database needs before it opens; raise OSError when impossible."""

    @abstractmethod
    def _has_database(self) -> bool:
        """Whether there is a database to browse when `_prepare` failed."""

    @abstractmethod
    def _reader(self) -> Engine:
        """An engine for browsing a history that cannot be written."""

    @abstractmethod
    def _after_open(self) -> None:
        """Make what saving needs once the database is open; raise OSError when impossible."""

    @abstractmethod
    def _refuse_unusable(self, exc: BaseException) -> None:
        """Raise `HistoryError` when a failed schema step means reading is pointless too."""

    # errors ----------------------------------------------------------------------------------
    def explain(self, exc: BaseException, action: str = "save to") -> HistoryError:
        """A failed write or open in plain words: where, why, the fix (never a password)."""
        return _explain(exc, self.where, url=self.url, local=self.local, action=action)

    def explain_open(self, exc: BaseException) -> HistoryError:
        """Why the history cannot even be browsed."""
        return self.explain(exc, action="open")

    def read_error(self, exc: BaseException) -> HistoryError:
        """A failed read in plain words."""
        return HistoryError(
            f"Could not read the history in {quote(self.where)}: "
            f"{quote(_scrub(_reason(exc), self.url))}."
        )

    def check_writable(self) -> None:
        """Raise `HistoryError` when this history is read-only."""
        if self.read_only is not None:
            raise HistoryError(
                f"This history is read-only, so the image was not saved "
                f"({quote(self.read_only)}). Make {quote(self.where)} writable, or point "
                f"{self.setting} elsewhere. The image itself is still shown and can be "
                "downloaded."
            )

    # rows ------------------------------------------------------------------------------------
    def insert_ignore(
        self, conn: Connection, table: Any, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Insert `rows`, skipping any whose key is already there."""
        conn.execute(self.dialect_insert(table).on_conflict_do_nothing(), list(rows))

    def upsert(
        self,
        conn: Connection,
        table: Any,
        row: Mapping[str, Any],
        *,
        key: Sequence[str],
        update: Sequence[str],
    ) -> None:
        """Insert `row`, or when a row with the same `key` columns exists (a unique
        constraint), set its `update` columns to `row`'s values."""
        statement = self.dialect_insert(table).values(dict(row))
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=list(key),
                set_={name: statement.excluded[name] for name in update},
            )
        )

    @abstractmethod
    def owner_transaction(self, owner: str) -> contextlib.AbstractContextManager[Connection]:
        """A write transaction no other one for `owner` runs beside, in any process: what
        the daily allowance needs to count and reserve in one step."""

    # image bytes -----------------------------------------------------------------------------
    @abstractmethod
    def put_images(
        self, conn: Connection, record_id: str, png: bytes | None, thumb: bytes | None
    ) -> None:
        """Store a record's PNG and thumbnail as part of `conn`'s transaction."""

    @abstractmethod
    def discard(self, record_id: str) -> None:
        """Undo `put_images` after its transaction did not commit."""

    @abstractmethod
    def remove_images(self, conn: Connection, record_id: str) -> None:
        """Remove a purged record's image bytes as part of `conn`'s transaction."""

    @abstractmethod
    def after_purge(self, record_ids: Sequence[str]) -> None:
        """Remove what a committed purge left outside the database."""

    @abstractmethod
    def png(self, record_id: str) -> bytes | None:
        """The stored PNG exactly as written, or None; SQLAlchemyError when unreachable."""

    @abstractmethod
    def thumbs(self, record_ids: list[str]) -> dict[str, bytes]:
        """Stored thumbnail bytes per id (ids without one are left out)."""

    # sources and masks (0005) ------------------------------------------------------------
    @abstractmethod
    def put_input(self, conn: Connection, sha256: str, png: bytes) -> None:
        """Keep a source's or mask's PNG bytes under their SHA-256 (once: the same bytes
        may serve many records), as part of `conn`'s transaction."""

    @abstractmethod
    def input_png(self, sha256: str) -> bytes | None:
        """The bytes kept under `sha256` (a checked hex name), or None; SQLAlchemyError
        when unreachable."""

    # repair ----------------------------------------------------------------------------------
    def repair(self, *, grace_seconds: float) -> dict[str, int]:
        """Make rows and image bytes agree after a crash; return counts (nothing to do here:
        rows and bytes commit in one transaction)."""
        return {"temp_removed": 0, "rows_restored": 0, "files_removed": 0, "thumbs_rebuilt": 0}
