"""The whole history as one zip: every PNG (with its settings chunks) and the metadata.

Layout::

    images/<UTC time>_seed<seed>_<id8>.png   the original bytes as stored
    inputs/<sha256>.png                      uploaded sources and inpaint masks, once each
    metadata.jsonl                           one record per line, with its "file"
    README.txt                               what this is

PNGs are stored, not deflated again (they are compressed already). The page's download
holds the zip in memory (Streamlit serves downloads from memory); for a very long history
copy it to a folder with `python -m core.history.copy` instead.

Rows are outside input (an edited or damaged database): a record holding values this app
does not write is still exported, its line marked with "problems" and README.txt saying
how many; file names are built only from checked values, so no row can name a file
outside images/ (nor fail the whole download, as a time out of range once did).
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import math
import zipfile
from typing import IO, Any

from core.history.blobs import valid_sha256
from core.history.record import readable_time, valid_id

README = """Seed history exported from the SD3.5 dashboard.

images/ holds every stored image exactly as saved: each PNG carries an A1111-style
`parameters` text chunk (readable by A1111, Forge, ComfyUI, InvokeAI and this app's
Import) and the full record as JSON in `sd35-dashboard`.
metadata.jsonl has one record per line; "file" names its PNG (null when the image was
missing from the history).
inputs/ holds what Vary, Inpaint and Upscale worked on when it was not a record itself
(an uploaded source, an inpaint mask), named by the SHA-256 a record's "source_sha256" or
"mask_sha256" gives; "source_record" names a source that is a record of this history.
"""

PROBLEMS_NOTE = """
{count} records hold values this app does not write (an edited or damaged database).
They are exported as stored; their metadata.jsonl lines list the "problems", and a time
that is not one is written as 0 (its file name says unknown-time).
"""


def file_name(record: Any, number: int = 0) -> str:
    """`images/<time>_seed<seed>_<id8>.png` from checked values only (`number`: the line)."""
    when = readable_time(record.created_at)
    stamp = (
        f"{datetime.datetime.fromtimestamp(when, tz=datetime.UTC):%Y%m%d-%H%M%S}"
        if when
        else "unknown-time"
    )
    seed = record.seed if type(record.seed) is int else "unknown"
    name = record.id[:8] if valid_id(record.id) else f"line{number}"
    return f"images/{stamp}_seed{seed}_{name}.png"


def _line(record: Any, name: str | None, problems: list[str]) -> str:
    fields = {
        key: (None if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in dataclasses.asdict(record).items()
    }
    fields["file"] = name
    if problems:
        fields["problems"] = problems
    # default=str: a value no JSON type fits (bytes in a number column) is written as text.
    return json.dumps(fields, ensure_ascii=False, allow_nan=False, default=str)


def write_zip(store: Any, target: IO[bytes]) -> int:
    """Write the zip of `store` into `target`; return the number of records."""
    count = marked = 0
    names: set[str] = set()
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        lines = []
        for record in store.iter_records():
            count += 1
            problems = record.stored_problems()
            marked += bool(problems)
            png = store.png_bytes(record.id)
            name = None
            if png is not None:
                name = file_name(record, count)
                if name in names:  # two unreadable times and seeds: keep both files
                    name = name[: -len(".png")] + f"_line{count}.png"
                names.add(name)
                archive.writestr(name, png)
            lines.append(_line(record, name, problems))
            for sha256 in (record.source_sha256, record.mask_sha256):
                data = store.input_png(sha256) if valid_sha256(sha256) else None
                if data is not None and f"inputs/{sha256}.png" not in names:
                    names.add(f"inputs/{sha256}.png")  # a hex name: no row can choose a path
                    archive.writestr(f"inputs/{sha256}.png", data)
        archive.writestr(
            "metadata.jsonl", "\n".join(lines) + "\n", compress_type=zipfile.ZIP_DEFLATED
        )
        note = PROBLEMS_NOTE.format(count=marked) if marked else ""
        archive.writestr("README.txt", README + note, compress_type=zipfile.ZIP_DEFLATED)
    return count


def zip_bytes(store: Any) -> bytes:
    """The zip of `store` as bytes (for `st.download_button`)."""
    buffer = io.BytesIO()
    write_zip(store, buffer)
    return buffer.getvalue()
