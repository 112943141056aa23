"""The seed history: every generated image with everything needed to make it again.

The pages use this small surface: `open_store(settings)` → `HistoryStore` (`page`, `get`,
`thumbnails`, `stored_image`, `png_bytes`, `delete`, `read_only`),
`keep_result` after a generation, `verify`, and the record helpers; the daily limit's use
cases hold places with `reserve` / `release` (through `core.limits`). Modules:

- `record`  — `HistoryRecord`, the facts it keeps, and the check of rows read back;
- `store`   — `HistoryStore`, the facade callers use, and `open_store` (one per process);
- `storage/` — where a history lives, one file per engine behind one interface:
  `sqlite_files` (SQLite + image files in a folder), `postgresql` (bytes in a table);
- `records`, `trash`, `spending`, `repair` — the store's parts: records and their images;
  delete/restore/purge and the audit trail; the daily limit's counts; start-up repair;
- `grids`, `saved_styles` — X/Y grids (their cells are records) and named prompt styles,
  reached as `store.grids` and `store.styles`;
- `engine`  — the SQLAlchemy engines (transactions, read-only opening, timeouts);
- `errors`  — `HistoryError` in plain words, URLs shown without their password;
- `keep`    — `keep_result`: save a generation's images and say exactly what was kept;
- `blobs`   — image bytes: encoding, safe decoding (bombs, garbage), atomic writes;
- `schema`  — tables and versioned migrations (Alembic, in `migrations/`);
- `copy`    — `python -m core.history.copy SRC DST`, moving a history between stores;
- `export`  — the whole history as a zip of PNGs with their metadata;
- `verify`  — regenerate a record and compare pixels;
- `inputs`  — a record's source and mask read back (Vary, Inpaint, Upscale), and which
  records a visitor may use as a source.
"""

from core.history.blobs import (
    THUMB_SIZE,
    encode_png,
    encode_thumbnail,
    pixel_sha256,
    placeholder_image,
)
from core.history.errors import (
    HistoryError,
    PartialSaveError,
    _explain,
    describe_url,
    parse_url,
)
from core.history.inputs import (
    InputsMissing,
    record_inputs,
    record_request,
    record_source,
    visible_record,
)
from core.history.keep import Kept, keep_result, save_result
from core.history.record import (
    HistoryRecord,
    environment,
    environment_differences,
    format_time,
    model_revision,
    new_record,
    package_version,
    session_id,
)
from core.history.store import (
    _STORES,
    DB_NAME,
    PAGE_SIZE,
    RESTORE_DAYS,
    AuditEntry,
    DeletedRecord,
    GridRow,
    HistoryStore,
    NotAllowed,
    Page,
    Reservation,
    SavedStyle,
    open_store,
)
from core.history.verify import Verification, compare_png, verify

__all__ = [
    "DB_NAME",
    "PAGE_SIZE",
    "RESTORE_DAYS",
    "AuditEntry",
    "DeletedRecord",
    "GridRow",
    "NotAllowed",
    "THUMB_SIZE",
    "_STORES",
    "HistoryError",
    "HistoryRecord",
    "HistoryStore",
    "InputsMissing",
    "Kept",
    "Page",
    "PartialSaveError",
    "Reservation",
    "SavedStyle",
    "Verification",
    "_explain",
    "compare_png",
    "describe_url",
    "encode_png",
    "encode_thumbnail",
    "environment",
    "environment_differences",
    "format_time",
    "keep_result",
    "model_revision",
    "new_record",
    "open_store",
    "package_version",
    "parse_url",
    "pixel_sha256",
    "placeholder_image",
    "record_inputs",
    "record_request",
    "record_source",
    "save_result",
    "session_id",
    "verify",
    "visible_record",
]
