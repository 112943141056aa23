"""Draw a grid's cells into one labelled PNG, with the axes in its metadata.

Column headers carry the X values, row headers the Y values, the corner the axis names;
labels are wrapped to their cell and cut with "…" past MAX_LABEL_LINES lines. A cell that
did not run (a stopped grid) is a grey placeholder saying "not run". Pillow's built-in
font (`ImageFont.load_default(size=…)`) draws the text: no system fonts needed.

Size rule: cells are drawn at their own size unless the cell area would exceed
MAX_GRID_SIDE pixels on a side; then every cell is scaled down by the same factor (never
up), so 6 × 6 cells of 1440² become 682² each (a 4092² cell area plus headers) instead of
an 8640² image of 75 megapixels.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.grid import GridPlan

MAX_GRID_SIDE = 4096
MAX_LABEL_LINES = 3
GRID_JSON_KEY = "sd35-dashboard-grid"
PARAMETERS_KEY = "parameters"
BACKGROUND = (255, 255, 255)
PLACEHOLDER = (224, 224, 224)
INK = (0, 0, 0)
MUTED = (96, 96, 96)


@dataclass(frozen=True)
class Layout:
    """Where everything goes: cell size after scaling and the header sizes."""

    cell_width: int
    cell_height: int
    scale: float  # ≤ 1: cells were drawn this much smaller than generated
    left: int  # width of the row-header column
    top: int  # height of the column-header row
    font_size: int

    def cell_box(self, column: int, row: int) -> tuple[int, int]:
        return self.left + column * self.cell_width, self.top + row * self.cell_height


def cell_scale(columns: int, rows: int, width: int, height: int, max_side: int) -> float:
    """The factor (≤ 1) that keeps the cell area within `max_side` on both sides."""
    return min(1.0, max_side / (columns * width), max_side / (rows * height))


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def wrap(text: str, font: Any, width: int, max_lines: int = MAX_LABEL_LINES) -> list[str]:
    """Split `text` into lines no wider than `width` pixels (words first, then characters)."""
    text = " ".join(str(text).split())
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for char in word:  # a word wider than the cell is broken where it must be
            if font.getlength(current + char) > width and current:
                lines.append(current)
                current = ""
            current += char
        if len(lines) > max_lines:
            break
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines or [""]


def layout(
    *,
    columns: int,
    rows: int,
    width: int,
    height: int,
    has_y: bool,
    max_side: int = MAX_GRID_SIDE,
) -> Layout:
    scale = cell_scale(columns, rows, width, height, max_side)
    cell_width = max(int(width * scale), 1)
    cell_height = max(int(height * scale), 1)
    font_size = max(12, min(48, cell_width // 16))
    line = int(font_size * 1.25)
    top = line * (MAX_LABEL_LINES + 1) + font_size  # the axis name, then up to 3 lines
    left = max(cell_width // 2, font_size * 8) if has_y else 0
    return Layout(cell_width, cell_height, scale, left, top, font_size)


def _draw_lines(draw: Any, lines: Sequence[str], font: Any, box: tuple[int, int, int, int], fill):
    """Draw lines centred in `box` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    line = int(font.size * 1.25)
    y = y0 + max((y1 - y0 - line * len(lines)) // 2, 0)
    for text in lines:
        x = x0 + max(int((x1 - x0 - font.getlength(text)) // 2), 0)
        draw.text((x, y), text, font=font, fill=fill)
        y += line


def draw_grid(
    images: Sequence[Any],
    *,
    columns: int,
    rows: int,
    size: tuple[int, int],
    x_title: str,
    x_labels: Sequence[str],
    y_title: str = "",
    y_labels: Sequence[str] = (),
    max_side: int = MAX_GRID_SIDE,
    missing: str = "not run",
) -> Any:
    """Return the labelled grid as a PIL image; `images[i]` is cell i (row-major) or None
    (drawn as a grey cell saying `missing`)."""
    from PIL import Image, ImageDraw

    width, height = size
    spec = layout(
        columns=columns,
        rows=rows,
        width=width,
        height=height,
        has_y=bool(y_labels),
        max_side=max_side,
    )
    font = _font(spec.font_size)
    small = _font(max(spec.font_size * 3 // 4, 10))
    canvas = Image.new(
        "RGB",
        (spec.left + columns * spec.cell_width, spec.top + rows * spec.cell_height),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(canvas)
    line = int(spec.font_size * 1.25)
    title_width = columns * spec.cell_width - 8
    draw.text(
        (spec.left + 4, 4), wrap(f"X: {x_title}", font, title_width, 1)[0], font=font, fill=INK
    )
    if y_labels:
        corner = wrap(f"Y: {y_title}", small, max(spec.left - 8, 8), 2)
        _draw_lines(draw, corner, small, (0, line, spec.left, spec.top), MUTED)
    for column, label in enumerate(x_labels[:columns]):
        x0, _ = spec.cell_box(column, 0)
        lines = wrap(label, font, spec.cell_width - 8)
        _draw_lines(draw, lines, font, (x0, line, x0 + spec.cell_width, spec.top), INK)
    for row, label in enumerate(y_labels[:rows]):
        _, y0 = spec.cell_box(0, row)
        lines = wrap(label, font, max(spec.left - 8, 8))
        _draw_lines(draw, lines, font, (0, y0, spec.left, y0 + spec.cell_height), INK)
    for index in range(columns * rows):
        x0, y0 = spec.cell_box(index % columns, index // columns)
        image = images[index] if index < len(images) else None
        if image is None:
            box = (x0 + 1, y0 + 1, x0 + spec.cell_width - 2, y0 + spec.cell_height - 2)
            draw.rectangle(box, fill=PLACEHOLDER)
            _draw_lines(draw, [missing], font, box, MUTED)
            continue
        cell = image.convert("RGB")
        if cell.size != (spec.cell_width, spec.cell_height):
            cell = cell.resize((spec.cell_width, spec.cell_height), Image.Resampling.LANCZOS)
        canvas.paste(cell, (x0, y0))
    return canvas


def draw_plan(
    plan: GridPlan, images: Sequence[Any], *, size: tuple[int, int], max_side: int = MAX_GRID_SIDE
) -> Any:
    """`draw_grid` with the plan's axes as headers."""
    return draw_grid(
        images,
        columns=plan.columns,
        rows=plan.rows,
        size=size,
        x_title=plan.x.title,
        x_labels=plan.x.labels,
        y_title=plan.y.title if plan.y is not None else "",
        y_labels=plan.y.labels if plan.y is not None else (),
        max_side=max_side,
    )


def a1111_quote(value: str) -> str:
    """Quote like A1111's infotext: JSON only when the value holds `,` `:` or a newline."""
    if "," not in value and ":" not in value and "\n" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def grid_infotext(plan: GridPlan, base_infotext: str = "") -> str:
    """A1111-like `parameters` for the grid: the first cell's settings plus `X Type`,
    `X Values` (and Y), as A1111's X/Y/Z plot writes them on its grid image."""
    axes = ", ".join(f"{k}: {a1111_quote(v)}" for k, v in plan.infotext_fields().items())
    base = base_infotext.rstrip()
    if not base:
        return axes
    return f"{base}, {axes}"


def grid_record(
    plan: GridPlan,
    images: Sequence[Any],
    *,
    size: tuple[int, int],
    scale: float,
    stopped: bool,
    record_ids: Mapping[int, Any] | None = None,
) -> dict[str, Any]:
    """The JSON chunk: axes, cell labels and which cells ran (and their history records)."""

    def axis(a):
        if a is None:
            return None
        return {"kind": a.kind, "title": a.title, "text": a.text, "labels": list(a.labels)}

    record_ids = record_ids or {}
    return {
        "version": 1,
        "x": axis(plan.x),
        "y": axis(plan.y),
        "columns": plan.columns,
        "rows": plan.rows,
        "cell_size": list(size),
        "scale": round(scale, 6),
        "stopped": stopped,
        "cells": [
            {
                "index": c.index,
                "column": c.column,
                "row": c.row,
                "x": c.x_label,
                "y": c.y_label,
                "done": c.index < len(images) and images[c.index] is not None,
                "record": record_ids.get(c.index),
                "seed": c.request.seed,
            }
            for c in plan.cells
        ],
    }


def grid_png(image: Any, *, parameters: str, record: Mapping[str, Any]) -> bytes:
    """PNG bytes of the grid with the `parameters` text and the JSON record chunk."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters)
    info.add_text(GRID_JSON_KEY, json.dumps(record, ensure_ascii=False))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()
