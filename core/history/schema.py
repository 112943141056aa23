"""The history's tables and how they are created and upgraded (Alembic).

The schema is versioned with Alembic: `migrations/versions/` holds one file per version,
each with `upgrade()`; the database remembers the version it is at in `alembic_version`.
`ensure_schema` runs on every store open. When the database is already at `HEAD` it costs
one small query and does not import Alembic; otherwise it upgrades under a lock, so two
processes starting at once never run a migration twice:

- PostgreSQL: `pg_advisory_xact_lock(LOCK_KEY)` in the migration's transaction (DDL is
  transactional there: a failed migration leaves the old schema whole);
- SQLite: `BEGIN IMMEDIATE` (the database's one write lock) around the migration.

A history made before versioning (a `records` table without `alembic_version`) is
upgraded in place by migration 0001, which creates only what is missing.

Adding a migration (0003, family + mode + mode options, 0004, reservations, 0005,
sources and masks, and 0006, grids, LoRAs and styles, were added this way; next is 0007)
-----------------------------------------------------------------------------------------
1. Add `migrations/versions/0006_<what>.py` with ``revision = "0006"``,
   ``down_revision = "0005"`` and an `upgrade()` using `alembic.op` (use
   ``with op.batch_alter_table("records") as batch:`` for column changes, so SQLite works;
   spell the columns out there rather than importing the tables below, which describe
   only the newest schema). `alembic revision -m "..."` with
   ``script_location=core/history/migrations`` writes the skeleton.
2. Change the `Table` definitions below to the new newest schema.
3. Set `HEAD = "0006"`. `tests/test_history.py::test_schema_head_matches_migrations` fails
   until steps 1 and 3 agree; the store tests then run the upgrade on SQLite and PostgreSQL.
   `test_a_next_migration_upgrades_an_existing_history_in_place` shows such a file (a
   note column) upgrading a history with records on both engines; move its text into
   `versions/` as the starting point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

HEAD = "0006"  # the newest migration's `revision`; see "Adding a migration" above
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key: any constant shared by every process of this app.
LOCK_KEY = 0x5D35_4157

metadata = MetaData()

records = Table(
    "records",
    metadata,
    Column("id", Text, primary_key=True),
    Column("created_at", Float(53), nullable=False),
    Column("session_id", Text),
    Column("prompt", Text),
    Column("negative_prompt", Text),
    Column("seed", BigInteger),
    Column("width", Integer),
    Column("height", Integer),
    Column("steps", Integer),
    Column("guidance_scale", Float(53)),
    Column("model", Text),
    Column("model_revision", Text),
    Column("scheduler", Text),
    Column("device", Text),
    Column("dtype", Text),
    Column("torch_version", Text),
    Column("diffusers_version", Text),
    Column("transformers_version", Text),
    Column("backend", Text),
    Column("duration_seconds", Float(53)),
    Column("image_sha256", Text),
    # 0002: who made it (LOCAL_USER without sign-in) and the soft delete.
    Column("owner", Text, nullable=False, server_default="local"),
    Column("deleted_at", Float(53)),
    Column("deleted_by", Text),
    # 0003: the model family, the generation mode and its options (JSON), so a new mode
    # needs no new column. Older rows: the demo family for the demo model, else SD3.5
    # Medium (Large / Large Turbo by their Hub id), text to image, no options.
    Column("family", Text, nullable=False, server_default="sd35-medium"),
    Column("mode", Text, nullable=False, server_default="txt2img"),
    Column("mode_options", Text, nullable=False, server_default="{}"),
    # 0005: what Vary / Inpaint / Upscale worked on: the source record (a reference), or
    # the SHA-256 of the source's own bytes (an upload), and of the inpaint mask's (see
    # `inputs`). NULL for text to image.
    Column("source_record", Text),
    Column("source_sha256", Text),
    Column("mask_sha256", Text),
    # 0006: the LoRAs and styles it was made with (JSON lists), and the X/Y grid it is a
    # cell of ("" when none) with its index there.
    Column("loras", Text, nullable=False, server_default="[]"),
    Column("styles", Text, nullable=False, server_default="[]"),
    Column("grid_id", Text, nullable=False, server_default=""),
    Column("grid_cell", Integer, nullable=False, server_default="0"),
    Index("records_created_at", "created_at"),
    Index("records_seed", "seed", "created_at"),
    Index("records_session", "session_id", "created_at"),
    Index("records_owner", "owner", "created_at"),
    Index("records_deleted", "deleted_at"),
    Index("records_grid", "grid_id", "grid_cell"),
)

# 0002: who deleted, restored, purged or regenerated which record, when (admins read it in
# the gallery; the daily limit counts regenerations).
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float(53), nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("record_id", Text, nullable=False),
    Column("owner", Text),
    Column("detail", Text),
    Index("audit_at", "at"),
    Index("audit_actor", "actor", "action", "at"),
)

# 0004: places of the daily limit held by requests still running (core.history.spending):
# `places` images of `owner`, until they are saved, released, or `expires_at` passes.
reservations = Table(
    "reservations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("places", Integer, nullable=False),
    Column("created_at", Float(53), nullable=False),
    Column("expires_at", Float(53), nullable=False),
    Index("reservations_owner", "owner", "expires_at"),
)

# 0006: an X/Y grid (core.grid): who made it, its axes and cells as JSON (`spec`: the
# grid's record, `core.grid_image.grid_record`), and how it ended. Its cells are ordinary
# records pointing here (`records.grid_id`); the grid image is drawn again from them.
grids = Table(
    "grids",
    metadata,
    Column("id", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("created_at", Float(53), nullable=False),
    Column("state", Text, nullable=False),  # running, done, stopped, failed
    Column("columns", Integer, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("spec", Text, nullable=False),
    Index("grids_owner", "owner", "created_at"),
)

# 0006: named prompt styles (core.styles), each a person's own; an admin may publish one
# to everyone (`shared`). A name is unique per owner.
styles = Table(
    "styles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("prompt", Text, nullable=False, server_default=""),
    Column("negative_prompt", Text, nullable=False, server_default=""),
    Column("shared", Integer, nullable=False, server_default="0"),
    Column("created_at", Float(53), nullable=False),
    Column("updated_at", Float(53), nullable=False),
    Column("updated_by", Text, nullable=False, server_default=""),
    UniqueConstraint("owner", "name", name="styles_owner_name"),
    Index("styles_shared", "shared"),
)

# 0005: sources and masks as their own bytes, once per SHA-256, for databases that hold
# bytes (the local SQLite layout keeps them as files in `inputs/`).
inputs = Table(
    "inputs",
    metadata,
    Column("sha256", Text, primary_key=True),
    Column("png", LargeBinary, nullable=False),
)

# Image bytes, for databases that hold them (not the local SQLite layout, which keeps files).
images = Table(
    "images",
    metadata,
    Column("id", Text, primary_key=True),
    Column("png", LargeBinary, nullable=False),
    Column("thumb", LargeBinary),
)


class UnknownVersion(Exception):  # noqa: N818 - reads as what was found
    """The database is at a schema version no migration here knows (a newer app made it)."""

    def __init__(self, version: object) -> None:
        super().__init__(
            f"the database is at schema version {str(version)[:40]!r}, which this version of "
            "the app has no migration for (a newer version upgraded it?): update the app"
        )


def current_version(conn: Any) -> str | None:
    """The version the database is at, or None before versioning (or when empty)."""
    try:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:  # no such table yet; the caller's connection rolls back
        return None


def has_records_table(conn: Any) -> bool:
    return inspect(conn).has_table("records")


def ensure_schema(engine: Any, *, migrations: Path = MIGRATIONS, head: str = HEAD) -> None:
    """Create or upgrade the schema to `head` (safe when several processes start at once)."""
    with engine.connect() as conn:
        if current_version(conn) == head:
            return
    if engine.dialect.name == "sqlite":
        # WAL lets readers go on during a save; the mode is stored in the file, and can
        # only be changed outside a transaction.
        raw = engine.raw_connection()
        try:
            raw.driver_connection.execute("PRAGMA journal_mode=WAL")
        finally:
            raw.close()
    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            # Another process may have upgraded while this one waited for the lock.
            if _version_in(conn) != head:
                _upgrade(conn, migrations)


def _version_in(conn: Any) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _upgrade(conn: Any, migrations: Path = MIGRATIONS) -> None:
    """Run Alembic's `upgrade head` on `conn`, inside the caller's transaction.

    Raise `UnknownVersion` when the database is at a version no migration file names.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.attributes["connection"] = conn
    version = _version_in(conn)
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    if version is not None and version not in known:
        raise UnknownVersion(version)
    command.upgrade(config, "head")


def newest_revision() -> str:
    """The head revision according to the migration files (for the HEAD check in tests)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()
