"""History errors in plain words, and database URLs that never show their password.

Every error leaves the history package as a `HistoryError` whose message names where
(a folder, or the URL with its password as ***), why (the system's or server's words,
quoted as a code span and bounded) and the fix.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from core import safe_text

if TYPE_CHECKING:
    from core.history.record import HistoryRecord


class HistoryError(RuntimeError):
    """The history could not be read or written; the message says where and what to do."""


class PartialSaveError(HistoryError):
    """Some images of a batch were saved and some were not; `kept` lists the saved ones."""

    def __init__(self, message: str, kept: Sequence[HistoryRecord]) -> None:
        super().__init__(message)
        self.kept = tuple(kept)


def parse_url(text: str) -> URL:
    """A history URL as SQLAlchemy reads it; `postgres://` and `postgresql://` use psycopg 3.

    Raise `ValueError` (without echoing the text, which may hold a password) when it is
    not a SQLite or PostgreSQL URL.
    """
    try:
        url = make_url(text.strip())
    except ArgumentError:
        raise ValueError(
            "SD_HISTORY_URL is not a database URL; use e.g. "
            "postgresql+psycopg://user:password@host:5432/dbname or sqlite:////path/history.sqlite3."
        ) from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql" and driver in ("", "psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return url.set(drivername="sqlite")
    raise ValueError(
        f"SD_HISTORY_URL uses {url.drivername!r}; the history works with PostgreSQL "
        "(postgresql+psycopg://…) or SQLite (sqlite:///…)."
    )


def describe_url(url: URL) -> str:
    """The URL as it may be shown and logged: the password is replaced by ***."""
    return url.render_as_string(hide_password=True)


MAX_REASON_CHARS = 300


def quote(text: object) -> str:
    """Outside text (paths, server errors) as a bounded markdown code span.

    Messages from here are shown with `st.warning`/`st.error`, which render markdown: a
    code span shows a server's error text (or `***` in a URL) literally.
    """
    return safe_text.quote(text, MAX_REASON_CHARS)


def _scrub(text: str, url: URL | None) -> str:
    if url is not None and url.password:
        text = text.replace(str(url.password), "***")
    return text


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    text = getattr(inner, "strerror", None) or str(inner)
    return " ".join(text.split()) or type(inner).__name__


def _explain(
    exc: BaseException,
    where: Path | str,
    *,
    url: URL | None = None,
    local: bool = True,
    action: str = "save to",
) -> HistoryError:
    """A HistoryError for a failed open or save: where, why, and the fix (never a password)."""
    reason = _scrub(_reason(exc), url)
    code = getattr(exc, "errno", None) or getattr(getattr(exc, "orig", None), "errno", None)
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
    lowered = reason.lower()
    if code == errno.ENOSPC or "full" in lowered or "no space" in lowered or sqlstate == "53100":
        fix = "Free some disk space" + ("" if local else " on the database server")
    elif "password" in lowered or sqlstate.startswith("28"):
        fix = "Check the user name and password in SD_HISTORY_URL"
    elif "connect" in lowered or "connection" in lowered or sqlstate.startswith("08"):
        fix = "Check that the database server is running and reachable"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS) or "readonly" in lowered:
        fix = "Make the folder writable"
    else:
        fix = "Check the folder" if local else "Check the database"
    if local:
        fix += ", or point SD_DATA_DIR at a writable folder"
    tail = {
        "save to": " The image itself is still shown and can be downloaded.",
        "open": " Images are still generated and can be downloaded, but not saved.",
    }.get(action, "")
    return HistoryError(
        f"Could not {action} the history in {quote(str(where))}: {quote(reason)}. {fix}.{tail}"
    )
