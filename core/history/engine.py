"""SQLAlchemy engines for the history: SQLite with explicit transactions, PostgreSQL.

SQLite: the `sqlite3` module's own transaction handling is switched off, so `BEGIN` (or
`BEGIN IMMEDIATE`, with the `sqlite_immediate` execution option: the start-up lock) is
sent by SQLAlchemy when a transaction starts. A read-only engine opens the file with
`mode=ro` (or `immutable=1` on a read-only disk). PostgreSQL: psycopg 3, pre-ping, a
connect timeout, and no server-side prepared statements.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

CONNECT_TIMEOUT_SECONDS = 5


def make_engine(url: URL, *, read_only: bool = False) -> Engine:
    """An engine for `url`: SQLite with explicit transactions, PostgreSQL with pre-ping."""
    if url.get_backend_name() != "sqlite":
        return create_engine(
            url,
            pool_pre_ping=True,  # a connection dropped by a server restart is replaced
            pool_size=4,
            max_overflow=8,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                # No server-side prepared statements: the poolers of managed PostgreSQL
                # (PgBouncer/Supavisor in transaction mode) break them. The start-up lock
                # is transaction-scoped, so it works through such a pooler too.
                "prepare_threshold": None,
            },
        )
    if read_only:
        path = url.database or ""
        engine = create_engine(
            "sqlite://",
            creator=lambda: _connect_read_only(path),
            poolclass=NullPool,
        )
    else:
        engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin below start transactions, not the sqlite3 module.
        dbapi_connection.isolation_level = None
        # Text that is not UTF-8 (another program's row, a damaged page) reads with U+FFFD
        # in place of the bad bytes, instead of failing every query that touches the row.
        dbapi_connection.text_factory = _lenient_text
        dbapi_connection.execute("PRAGMA busy_timeout=30000")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _probe_writable(folder: Path) -> None:
    """Raise OSError (e.g. EROFS) unless a file can be created in `folder`.

    Permission bits alone do not tell (root ignores them; a read-only mount does not).
    """
    import tempfile

    with tempfile.TemporaryFile(dir=folder, prefix=".write-probe-"):
        pass


def _connect_read_only(path: str) -> sqlite3.Connection:
    from urllib.parse import quote

    uri = f"file:{quote(path)}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
        return conn
    except sqlite3.OperationalError:
        # A WAL database on a read-only disk cannot make its -shm file: read it as an
        # immutable file (nothing else can be writing to a read-only disk).
        return sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False)
