"""X/Y grids in the history: one row per grid, its cells ordinary records pointing to it.

A grid row is written when the grid starts (state "running") and updated when it ends
("done", "stopped" or "failed", with the cells' record ids in its spec), so a crash leaves
a "running" grid whose finished cells are still in the history. The grid image is not
stored: it is drawn again from the cells' records (`core.grid_image`), so a deleted cell
shows as a placeholder.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from core.history import schema
from core.history.record import HistoryRecord, readable_time, valid_id
from core.history.storage import Storage

STATES = ("running", "done", "stopped", "failed")
MAX_SPEC_CHARS = 1_000_000  # 36 cells of long S/R labels fit many times over
MAX_CELLS_READ = 64  # a grid has at most 36 cells (core.grid.MAX_CELLS)


@dataclass(frozen=True)
class GridRow:
    """A grid as stored: who made it, when, how it ended, and its spec (axes and cells,
    `core.grid_image.grid_record`); `spec` is {} when the stored text is not readable."""

    id: str
    owner: str
    created_at: float
    state: str
    columns: int
    rows: int
    spec: Mapping[str, Any] = field(default_factory=dict)


def _spec(text: Any) -> dict[str, Any]:
    """A stored spec, read as outside input: {} unless it is a JSON object of sane size."""
    if not isinstance(text, str) or len(text) > MAX_SPEC_CHARS:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and 0 < value <= MAX_CELLS_READ else 0


class Grids:
    """The grids of one `Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def start(self, *, owner: str, columns: int, rows: int, spec: Mapping[str, Any]) -> str:
        """Write a new "running" grid; return its id (`HistoryError` when it cannot be)."""
        self.storage.check_writable()
        grid_id = uuid.uuid4().hex
        row = {
            "id": grid_id,
            "owner": owner,
            "created_at": time.time(),
            "state": "running",
            "columns": columns,
            "rows": rows,
            "spec": json.dumps(dict(spec), ensure_ascii=False),
        }
        try:
            with self.storage.engine.begin() as conn:
                conn.execute(insert(schema.grids).values(row))
        except SQLAlchemyError as exc:
            raise self.storage.explain(exc) from exc
        return grid_id

    def finish(self, grid_id: str, *, state: str, spec: Mapping[str, Any]) -> None:
        """Say how the grid ended and keep its final spec (record ids per cell)."""
        if state not in STATES:
            raise ValueError(f"grid state must be one of {STATES}, not {state!r}")
        grids = schema.grids
        try:
            with self.storage.engine.begin() as conn:
                conn.execute(
                    update(grids)
                    .where(grids.c.id == grid_id)
                    .values(state=state, spec=json.dumps(dict(spec), ensure_ascii=False))
                )
        except SQLAlchemyError as exc:
            raise self.storage.explain(exc) from exc

    def get(self, grid_id: str) -> GridRow | None:
        """The grid, or None when there is none (or the id is not one this app makes)."""
        if not valid_id(grid_id):
            return None
        grids = schema.grids
        try:
            with self.storage.engine.connect() as conn:
                row = conn.execute(select(grids).where(grids.c.id == grid_id)).mappings().first()
        except SQLAlchemyError as exc:
            raise self.storage.read_error(exc) from exc
        if row is None:
            return None
        state = row["state"] if row["state"] in STATES else "unknown"
        return GridRow(
            id=str(row["id"]),
            owner=str(row["owner"] or ""),
            created_at=readable_time(row["created_at"]),
            state=state,
            columns=_count(row["columns"]),
            rows=_count(row["rows"]),
            spec=_spec(row["spec"]),
        )

    def cells(self, grid_id: str) -> list[HistoryRecord]:
        """The grid's live cell records in cell order (deleted cells are left out)."""
        if not valid_id(grid_id):
            return []
        records = schema.records
        query = (
            select(records)
            .where(records.c.grid_id == grid_id, records.c.deleted_at.is_(None))
            .order_by(records.c.grid_cell, records.c.created_at)
            .limit(MAX_CELLS_READ)
        )
        try:
            with self.storage.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except SQLAlchemyError as exc:
            raise self.storage.read_error(exc) from exc
        return [HistoryRecord.from_mapping(row) for row in rows]
