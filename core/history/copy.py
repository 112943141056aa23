"""Copy a seed history from one store to another.

    python -m core.history.copy SOURCE DESTINATION

SOURCE and DESTINATION are each a database URL (``postgresql+psycopg://user:pw@host/db``,
``sqlite:////abs/path/history.sqlite3``) or a data folder (its ``history.sqlite3`` and
image files, i.e. an ``SD_DATA_DIR``). Rows and image bytes are copied; the destination's
schema is created when needed. Idempotent: a record already in the destination (same id)
is skipped, so running it again after an interruption copies only the rest, and running
it twice changes nothing. Typical uses: local folder → PostgreSQL before a deploy, and
PostgreSQL → a folder as a backup. Passwords are never printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from core.history.record import valid_id
from core.history.store import HistoryError, HistoryStore
from core.safe_text import plural

BATCH = 200


@dataclass
class CopyReport:
    copied: int = 0
    skipped: int = 0  # already in the destination
    without_image: int = 0  # copied as a row only: the source had no image bytes
    refused: int = 0  # not copied: the id is not one this app makes (it would name files)
    without_inputs: int = 0  # copied without its source or mask: the source had lost them


def open_location(text: str) -> HistoryStore:
    """A store for a URL (`scheme://…`) or a data folder."""
    if "://" in text:
        return HistoryStore(url=text, repair=False)
    return HistoryStore(Path(text).expanduser(), repair=False)


def copy_history(
    source: HistoryStore, destination: HistoryStore, *, progress: bool = True
) -> CopyReport:
    """Copy every record of `source` missing from `destination`, oldest first."""
    from tqdm import tqdm

    report = CopyReport()
    with tqdm(total=source.count(), unit="record", disable=not progress, file=sys.stderr) as bar:
        batch = []
        for record in source.iter_records(batch=BATCH):
            batch.append(record)
            if len(batch) == BATCH:
                _copy_batch(source, destination, batch, report)
                bar.update(len(batch))
                batch = []
        _copy_batch(source, destination, batch, report)
        bar.update(len(batch))
    return report


def _copy_batch(source, destination, batch, report: CopyReport) -> None:
    present = destination.ids([record.id for record in batch])
    for record in batch:
        if not valid_id(record.id):
            report.refused += 1
            continue
        if record.id in present:
            report.skipped += 1
            continue
        png = source.png_bytes(record.id)
        thumb = source.storage.thumbs([record.id]).get(record.id) if png else None
        # An uploaded source and a mask travel with the record (a source record is a
        # reference: it is copied as a record of its own).
        named = [sha for sha in (record.source_sha256, record.mask_sha256) if sha]
        inputs = [data for data in map(source.input_png, named) if data is not None]
        if len(inputs) < len(named):
            record = dataclasses.replace(record, source_sha256="", mask_sha256="")
            report.without_inputs += 1
        destination.put(record, png, thumb, inputs=inputs)
        report.copied += 1
        report.without_image += png is None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.history.copy",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("source", help="database URL or data folder to copy from")
    parser.add_argument("destination", help="database URL or data folder to copy to")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        source = open_location(args.source)
        destination = open_location(args.destination)
        report = copy_history(source, destination, progress=not args.quiet)
    except (HistoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"Copied {plural(report.copied, 'record')} from {source.where} to {destination.where}; "
        f"{report.skipped} already there"
        + (
            f"; {report.without_image} without an image in the source"
            if report.without_image
            else ""
        )
        + (
            f"; {report.refused} refused (an id this app does not make: an edited source)"
            if report.refused
            else ""
        )
        + (
            f"; {report.without_inputs} without the source image or mask they were made from"
            if report.without_inputs
            else ""
        )
        + "."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
