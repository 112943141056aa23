"""Image bytes of the history: encoding, safe decoding, and where the bytes live.

Two places, one interface (`FileBlobs`, `TableBlobs`):

- a local SQLite history keeps files next to its database, as it always has::

      images/<id[:2]>/<id>.png   the PNG with its `parameters` and record chunks
      thumbs/<id[:2]>/<id>.webp  256 px thumbnail for the gallery grid

  A save writes both to temporary names, fsyncs and renames them, and only then commits
  the row; when the row does not commit the files are removed at once. A crash in between
  leaves an orphan, which start-up repair turns back into a row from the record JSON the
  PNG carries.
- any other database (PostgreSQL) keeps the bytes in its `images` table, inserted in the
  same transaction as the row: one service holds everything, and no half record can exist.

Stored bytes are outside input (a disk can be edited): `safe_image` reads only the header
and refuses anything that is not the expected format or is too large to decode (a
decompression bomb), so the gallery draws a placeholder instead of raising.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import uuid
from pathlib import Path
from typing import Any

THUMB_SIZE = 256
TMP_SUFFIX = ".tmp"
# Largest stored image the gallery will decode: far above what the generator makes
# (1440²) and far below Pillow's bomb threshold.
MAX_STORED_PIXELS = 4096 * 4096


def encode_png(image: Any, record: Any) -> bytes:
    """PNG bytes of `image` carrying the A1111 `parameters` and full-record chunks."""
    from core import metadata

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=metadata.png_info(record.to_json(), record.infotext()))
    return buffer.getvalue()


def pixel_sha256(image: Any) -> str:
    """SHA-256 of the image's RGB pixel bytes."""
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def encode_thumbnail(image: Any) -> bytes:
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
    buffer = io.BytesIO()
    thumb.save(buffer, format="WEBP", quality=80)
    return buffer.getvalue()


@functools.lru_cache(maxsize=16)
def placeholder_image(size: int = THUMB_SIZE, text: str = "image missing") -> bytes:
    """A grey PNG standing in for a missing or unreadable image (drawn once per kind)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (60, 60, 66))
    ImageDraw.Draw(image).text((12, size // 2 - 6), text, fill=(200, 200, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_problem(data: bytes, *, expected_format: str, verify: bool = False) -> str | None:
    """Why `data` must not be drawn ("unreadable", "too large"), or None when it is fine.

    Reads the header only (plus chunk checksums with `verify`); never decodes pixels, so a
    decompression bomb costs nothing.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != expected_format:
                return "unreadable"
            width, height = image.size
            if width * height > MAX_STORED_PIXELS:
                return "too large"
            if verify:
                image.verify()
    except Image.DecompressionBombError:
        return "too large"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return "unreadable"
    return None


def open_checked(data: bytes) -> Any:
    """Open stored PNG bytes for decoding; raise ValueError when unreadable or a bomb."""
    from PIL import Image

    problem = image_problem(data, expected_format="PNG")
    if problem is not None:
        raise ValueError(f"the stored image is {problem}")
    return Image.open(io.BytesIO(data))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, and rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class FileBlobs:
    """PNG and thumbnail files under one folder (the local SQLite layout)."""

    in_database = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images_dir = root / "images"
        self.thumbs_dir = root / "thumbs"

    def image_path(self, record_id: str) -> Path:
        return self.images_dir / record_id[:2] / f"{record_id}.png"

    def thumb_path(self, record_id: str) -> Path:
        return self.thumbs_dir / record_id[:2] / f"{record_id}.webp"

    def put(self, conn: Any, record_id: str, png: bytes | None, thumb: bytes | None) -> None:
        """Write both files (before the row's commit; `discard` undoes it)."""
        if png is not None:
            _write_atomic(self.image_path(record_id), png)
        if thumb is not None:
            _write_atomic(self.thumb_path(record_id), thumb)

    def discard(self, record_id: str) -> None:
        """Remove the files of a save whose row did not commit."""
        for path in (self.image_path(record_id), self.thumb_path(record_id)):
            with contextlib.suppress(OSError):  # else left for start-up repair
                path.unlink(missing_ok=True)

    def remove(self, conn: Any, record_id: str) -> None:
        """Files go after the row's delete commits (see `discard`)."""

    def png(self, record_id: str) -> bytes | None:
        try:
            return self.image_path(record_id).read_bytes()
        except OSError:
            return None

    def thumbs(self, record_ids: list[str]) -> dict[str, bytes]:
        found = {}
        for record_id in record_ids:
            try:
                found[record_id] = self.thumb_path(record_id).read_bytes()
            except OSError:
                continue
        return found


class TableBlobs:
    """PNG and thumbnail bytes in the database's `images` table (PostgreSQL)."""

    in_database = True

    def __init__(self, engine: Any, table: Any) -> None:
        self.engine = engine
        self.table = table

    def put(self, conn: Any, record_id: str, png: bytes | None, thumb: bytes | None) -> None:
        if png is not None:
            conn.execute(self.table.insert().values(id=record_id, png=png, thumb=thumb))

    def discard(self, record_id: str) -> None:
        """Nothing to do: the insert rolled back with its row."""

    def remove(self, conn: Any, record_id: str) -> None:
        conn.execute(self.table.delete().where(self.table.c.id == record_id))

    def png(self, record_id: str) -> bytes | None:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            data = conn.execute(
                select(self.table.c.png).where(self.table.c.id == record_id)
            ).scalar()
        return bytes(data) if data else None

    def thumbs(self, record_ids: list[str]) -> dict[str, bytes]:
        from sqlalchemy import select

        if not record_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(self.table.c.id, self.table.c.thumb).where(self.table.c.id.in_(record_ids))
            )
            return {row.id: bytes(row.thumb) for row in rows if row.thumb is not None}
