"""Start-up repair of a local history: make the files and the rows agree after a crash.

Only a history that keeps image files beside its database needs it (`Storage.needs_repair`):
a save writes the files, then commits the row, so a crash in between leaves an orphan
file. `open_store` runs it once per process, in the background, after the first page is
drawn (`start`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from core import metadata
from core.history import blobs as blob_store
from core.history import schema
from core.history.record import HistoryRecord

if TYPE_CHECKING:
    from core.history.storage.sqlite_files import SqliteFiles

log = logging.getLogger(__name__)

# A temporary or orphan file younger than this may belong to a save still running in
# another process; start-up repair leaves it alone.
ORPHAN_GRACE_SECONDS = 600.0
REPAIR_DELAY_SECONDS = 2.0  # a first render takes ~0.1 s; repair waits until it is drawn


def repair_files(files: SqliteFiles, *, grace_seconds: float) -> dict[str, int]:
    """Make files and rows agree after a crash; return counts.

    Old temporary files are removed; a PNG without a row gets its row back from the
    record JSON it carries (or is removed when it has none); a missing thumbnail is
    redrawn from its PNG. Rows whose PNG is gone are kept and counted.
    """
    report = {"temp_removed": 0, "rows_restored": 0, "files_removed": 0, "thumbs_rebuilt": 0}
    if files.read_only is not None:
        return report
    now = time.time()
    try:
        with files.engine.connect() as conn:
            ids = set(conn.execute(select(schema.records.c.id)).scalars())
    except SQLAlchemyError as exc:  # a damaged file: the next real call says so
        log.warning("history repair skipped: %s", files.read_error(exc))
        return report
    try:
        # One directory listing per folder, no stat per file: start-up stays fast at
        # tens of thousands of records. Only temporaries and orphans are looked at.
        pngs = _listing(files.images_dir)
        thumbs = _listing(files.thumbs_dir)
        report["temp_removed"] = _remove_old_temporaries(
            [*pngs.values(), *thumbs.values()], now - grace_seconds
        )
        png_ids = {name[:-4] for name in pngs if name.endswith(".png")}
        thumb_ids = {name[:-5] for name in thumbs if name.endswith(".webp")}
        for record_id in png_ids - ids:
            path = files.image_path(record_id)
            if now - path.stat().st_mtime <= grace_seconds:
                continue  # maybe a save in progress elsewhere: its row is coming
            record = _record_from_file(path)
            if record is not None and record.id == record_id:
                with files.engine.begin() as conn:
                    files.insert_ignore(conn, schema.records, [dataclasses.asdict(record)])
                ids.add(record_id)
                report["rows_restored"] += 1
            else:
                path.unlink(missing_ok=True)
                files.thumb_path(record_id).unlink(missing_ok=True)
                png_ids.discard(record_id)
                report["files_removed"] += 1
        for record_id in (ids & png_ids) - thumb_ids:
            _rebuild_thumbnail(files, record_id)
            report["thumbs_rebuilt"] += 1
        report["rows_without_image"] = len(ids - png_ids)
    except OSError as exc:  # a read-only dir can still be browsed
        log.warning("history repair skipped: %s", exc)
    except SQLAlchemyError as exc:  # a damaged file: the next real call says so
        log.warning("history repair stopped: %s", files.read_error(exc))
    if any(report.values()):
        log.info("history repair in %s: %s", files.where, report)
    return report


def _remove_old_temporaries(paths: list[str], older_than: float) -> int:
    removed = 0
    for path in paths:
        if path.endswith(blob_store.TMP_SUFFIX) and os.stat(path).st_mtime < older_than:
            Path(path).unlink(missing_ok=True)
            removed += 1
    return removed


def _listing(folder: Path) -> dict[str, str]:
    """File name → path for every file one level below `folder` (the id-prefix folders)."""
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    with os.scandir(folder) as prefixes:
        for prefix in prefixes:
            if prefix.is_dir():
                with os.scandir(prefix.path) as entries:
                    found.update({e.name: e.path for e in entries if e.is_file()})
    return found


def _record_from_file(path: Path) -> HistoryRecord | None:
    from PIL import Image

    try:
        chunks = metadata.read_png_text(path.read_bytes())
        return HistoryRecord.from_mapping(json.loads(chunks[metadata.RECORD_KEY]))
    except (
        metadata.MetadataError,
        Image.DecompressionBombError,
        KeyError,
        TypeError,
        ValueError,
        OSError,
    ):
        return None


def _rebuild_thumbnail(files: SqliteFiles, record_id: str) -> None:
    try:
        with blob_store.open_checked(files.image_path(record_id).read_bytes()) as image:
            blob_store._write_atomic(
                files.thumb_path(record_id), blob_store.encode_thumbnail(image)
            )
    except (OSError, SyntaxError, ValueError) as exc:
        log.warning("could not redraw the thumbnail of %s: %s", record_id, exc)


# --- in the background, once per process -------------------------------------------------------
def start(store: Any) -> None:
    """Repair `store` (a HistoryStore) on a daemon thread once the first page is drawn.

    Repair lists every image folder (~0.2 s at 10,000 records): run before or beside the
    first page render, it held the GIL and slowed that render ~1.5x. It is safe next to
    saves: files younger than the grace period are left alone, rows are only added.
    """
    threading.Thread(target=_repair_quietly, args=(store,), daemon=True).start()


def _repair_quietly(store: Any) -> None:
    time.sleep(REPAIR_DELAY_SECONDS)
    try:
        store.repair_report = store.repair()
    except (OSError, SQLAlchemyError) as exc:  # a broken dir shows up on the next real call
        log.warning("history repair skipped: %s", exc)
