"""The whole history as one zip: every PNG (with its settings chunks) and the metadata.

Layout::

    images/<UTC time>_seed<seed>_<id8>.png   the original bytes as stored
    metadata.jsonl                           one record per line, with its "file"
    README.txt                               what this is

PNGs are stored, not deflated again (they are compressed already). The page's download
holds the zip in memory (Streamlit serves downloads from memory); for a very long history
copy it to a folder with `python -m core.history.copy` instead.
"""

from __future__ import annotations

import datetime
import io
import json
import zipfile
from dataclasses import asdict
from typing import IO, Any

README = """Seed history exported from the SD3.5 dashboard.

images/ holds every stored image exactly as saved: each PNG carries an A1111-style
`parameters` text chunk (readable by A1111, Forge, ComfyUI, InvokeAI and this app's
Import) and the full record as JSON in `sd35-dashboard`.
metadata.jsonl has one record per line; "file" names its PNG (null when the image was
missing from the history).
"""


def file_name(record: Any) -> str:
    moment = datetime.datetime.fromtimestamp(record.created_at, tz=datetime.UTC)
    return f"images/{moment:%Y%m%d-%H%M%S}_seed{record.seed}_{record.id[:8]}.png"


def write_zip(store: Any, target: IO[bytes]) -> int:
    """Write the zip of `store` into `target`; return the number of records."""
    count = 0
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("README.txt", README, compress_type=zipfile.ZIP_DEFLATED)
        lines = []
        for record in store.iter_records():
            png = store.png_bytes(record.id)
            name = file_name(record) if png is not None else None
            if png is not None:
                archive.writestr(name, png)
            lines.append(json.dumps({**asdict(record), "file": name}, ensure_ascii=False))
            count += 1
        archive.writestr(
            "metadata.jsonl", "\n".join(lines) + "\n", compress_type=zipfile.ZIP_DEFLATED
        )
    return count


def zip_bytes(store: Any) -> bytes:
    """The zip of `store` as bytes (for `st.download_button`)."""
    buffer = io.BytesIO()
    write_zip(store, buffer)
    return buffer.getvalue()
