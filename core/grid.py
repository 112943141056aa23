"""X/Y grids: parse the axes as typed, check them, and expand them into one request per cell.

A grid compares settings: pick an X axis (and optionally a Y axis) and type its values as a
list (`3, 4.5, 6`) or a range (`20-40 (+10)`, or A1111's count form `1-10 [5]`). Every value
is checked against the same ranges as the generator form before anything runs, and a grid is
refused when it has more than MAX_CELLS cells or more cells than the visitor has images left
today. The cells come out in a stable order, row-major with Y outer (A1111's X/Y/Z plot
draws them the same way), each an ordinary `GenerationRequest` with its axis labels.

Axes (A1111's names in brackets, written as `X Type` in the grid's infotext):
seed [Seed], guidance [CFG Scale], steps [Steps], SLG (`off`, `on` or a scale), strength
[Denoising] (image-to-image only), LoRA weight (of one LoRA), and prompt S/R [Prompt S/R]:
the first value is searched in the prompt and the negative prompt and replaced by each value
in turn; the first value itself is the first cell, and a first value found in neither is an
error, as in A1111.

Plain Python with no torch import: the generator page parses as the user types.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.generation import (
    LORA_WEIGHT_MAX,
    LORA_WEIGHT_MIN,
    MAX_GUIDANCE,
    MAX_SEED,
    MAX_STEPS,
    GenerationRequest,
    InvalidRequest,
    LoraChoice,
)
from core.limits import Allowance, LimitReached

MAX_CELLS = 36
# What one axis's text may hold: 36 values of a long S/R phrase each fit; a 20 MB paste
# is refused before it is split.
MAX_AXIS_TEXT = 4000
MAX_ITEM_CHARS = 64  # one number or range item ("0.25-2.75 (+0.25)" is 17)
MAX_LABEL_CHARS = 200  # an S/R value drawn as a header (the prompt itself holds the rest)

# diffusers' StableDiffusion3Pipeline defaults for SLG: "on" means this scale; it acts on
# the steps i with start·steps < i < stop·steps only.
DEFAULT_SLG_SCALE = 2.8
DEFAULT_SLG_START = 0.01
DEFAULT_SLG_STOP = 0.2
MAX_SLG_SCALE = 10.0
SLG_OFF = ("off", "no", "false", "none")
SLG_ON = ("on", "yes", "true")


class GridError(ValueError):
    """The grid cannot run as typed; the message names the axis, the value and the fix."""

    def __init__(self, message: str, *, axis: str = ""):
        super().__init__(message)
        self.axis = axis  # "X", "Y" or "" (the grid as a whole)


@dataclass(frozen=True)
class AxisKind:
    """One choice for the "X axis" / "Y axis" select boxes."""

    id: str
    label: str  # what the page shows and the grid image draws
    a1111: str  # A1111's `X Type` name, written into the grid's infotext
    value: str  # "int", "float", "slg" or "text"


AXES: dict[str, AxisKind] = {
    kind.id: kind
    for kind in (
        AxisKind("seed", "Seed", "Seed", "int"),
        AxisKind("guidance", "Guidance", "CFG Scale", "float"),
        AxisKind("steps", "Steps", "Steps", "int"),
        AxisKind("slg", "SLG", "SLG scale", "slg"),
        AxisKind("strength", "Strength", "Denoising", "float"),
        AxisKind("lora_weight", "LoRA weight", "LoRA weight", "float"),
        AxisKind("prompt_sr", "Prompt S/R", "Prompt S/R", "text"),
    )
}


@dataclass(frozen=True)
class Ranges:
    """Valid values per axis: the generator form's ranges (core.generation's constants).

    `strength` is None while the mode has no strength (text-to-image): the axis is refused.
    """

    seed: tuple[int, int] = (0, MAX_SEED)
    steps: tuple[int, int] = (1, MAX_STEPS)
    guidance: tuple[float, float] = (0.0, MAX_GUIDANCE)
    slg: tuple[float, float] = (0.0, MAX_SLG_SCALE)
    strength: tuple[float, float] | None = None
    lora_weight: tuple[float, float] = (LORA_WEIGHT_MIN, LORA_WEIGHT_MAX)
    slg_default: float = DEFAULT_SLG_SCALE


@dataclass(frozen=True)
class Axis:
    """One parsed axis: its values (typed) and the label drawn for each."""

    kind: str
    values: tuple[Any, ...]
    labels: tuple[str, ...]
    text: str  # the values as typed (stripped), for the infotext's `X Values`
    lora: str = ""  # the LoRA a "lora_weight" axis weighs

    @property
    def title(self) -> str:
        """The axis name drawn on the grid: "Guidance", "LoRA weight (film-grain)"."""
        label = AXES[self.kind].label
        return f"{label} ({self.lora})" if self.lora else label

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Cell:
    """One cell: where it sits, its labels, and the request it runs (its LoRAs included)."""

    index: int  # row * columns + column
    column: int
    row: int
    x_label: str
    y_label: str
    request: GenerationRequest
    overrides: Mapping[str, Any] = field(default_factory=dict)  # what the axes changed

    @property
    def loras(self) -> tuple[LoraChoice, ...]:
        return self.request.loras


@dataclass(frozen=True)
class GridPlan:
    """A checked grid: axes and cells in run order (row-major, Y outer)."""

    x: Axis
    y: Axis | None
    cells: tuple[Cell, ...]
    notes: tuple[str, ...] = ()  # things worth saying that are not errors

    @property
    def columns(self) -> int:
        return len(self.x)

    @property
    def rows(self) -> int:
        return len(self.y) if self.y is not None else 1

    @property
    def count(self) -> int:
        return len(self.cells)

    def infotext_fields(self) -> dict[str, str]:
        """A1111's grid keys: `X Type`, `X Values` (and Y) as its X/Y/Z plot writes them."""
        fields = {"X Type": self.x.title, "X Values": self.x.text}
        if self.y is not None:
            fields.update({"Y Type": self.y.title, "Y Values": self.y.text})
        return fields


@dataclass(kw_only=True, frozen=True)
class GridCellRequest(GenerationRequest):
    """A request with pipeline arguments the form does not have yet (SLG).

    A bridge until requests carry their mode's options (issue 17): `pipeline_kwargs()` adds
    `extra`, so `core.local.run_pipeline` passes it to the pipeline unchanged.
    """

    extra: tuple[tuple[str, Any], ...] = ()

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {**super().pipeline_kwargs(), **dict(self.extra)}


# --- parsing one axis ---------------------------------------------------------------------
_NUMBER = r"[+-]?(?:\d{1,12}(?:\.\d{0,12})?|\.\d{1,12})"
# `a-b`, `a-b (+s)`, `a-b [n]`: fixed pieces, no nested quantifiers, on ≤ 64 characters.
_RANGE = re.compile(
    rf"\s*({_NUMBER})\s*-\s*({_NUMBER})\s*(?:\(\s*({_NUMBER})\s*\)|\[\s*(\d{{1,4}})\s*\])?\s*"
)
_SINGLE = re.compile(rf"\s*({_NUMBER})\s*")


def split_values(text: str, *, which: str = "X") -> list[str]:
    """Split the typed values like A1111 (CSV: `"a, b", c` is two values), stripped."""
    if not isinstance(text, str):
        raise GridError(f"{which} values must be text.", axis=which)
    if len(text) > MAX_AXIS_TEXT:
        raise GridError(
            f"{which} values are {len(text):,} characters; at most {MAX_AXIS_TEXT:,} are read. "
            "Shorten the list.",
            axis=which,
        )
    try:
        rows = list(csv.reader(io.StringIO(text.replace("\0", ""))))
    except csv.Error as exc:
        raise GridError(f"{which} values cannot be read as a list ({exc}).", axis=which) from exc
    return [item.strip() for row in rows for item in row]


def _fmt(value: float) -> str:
    """3 → "3", 4.5 → "4.5", 2147483647 → "2147483647" (no exponent, no float noise)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.9g}"


def _range_values(
    match: re.Match[str], *, integer: bool, item: str, which: str, limit: int
) -> list[float]:
    """Expand `a-b`, `a-b (+s)` or `a-b [n]`; count first, so a huge range is never built."""
    start, end = float(match[1]), float(match[2])
    if match[4] is not None:  # count form: n values spread evenly from a to b
        count = int(match[4])
        if count < 1:
            raise GridError(f"{which} values: {item!r} asks for 0 values.", axis=which)
        if count > limit:
            raise GridError(
                f"{which} values: {item!r} makes {count} values; a grid holds at most "
                f"{MAX_CELLS} cells.",
                axis=which,
            )
        if count == 1:
            return [start]
        values = [start + (end - start) * i / (count - 1) for i in range(count)]
        return [round(v) for v in values] if integer else values
    step = float(match[3]) if match[3] is not None else (1.0 if end >= start else -1.0)
    if integer and (not start.is_integer() or not end.is_integer() or not step.is_integer()):
        raise GridError(f"{which} values: {item!r} is not a range of whole numbers.", axis=which)
    if step == 0 or (end - start) * step < 0:
        raise GridError(
            f"{which} values: {item!r} never reaches {_fmt(end)} with step {_fmt(step)}. "
            f"Use a {'negative' if end < start else 'positive'} step.",
            axis=which,
        )
    count = math.floor((end - start) / step + 1e-9) + 1
    if count > limit:
        raise GridError(
            f"{which} values: {item!r} makes {count:,} values; a grid holds at most "
            f"{MAX_CELLS} cells.",
            axis=which,
        )
    # Rounded so that 0.1 steps read 0.3, not 0.30000000000000004.
    return [round(start + i * step, 9) for i in range(count)]


def _numbers(items: Sequence[str], *, integer: bool, which: str, label: str) -> list[float]:
    values: list[float] = []
    for item in items:
        if not item:
            continue  # "3, 4.5," — a trailing comma is not a value
        if len(item) > MAX_ITEM_CHARS:
            raise GridError(
                f"{which} values: {item[:20]!r}… is not a number or a range.", axis=which
            )
        single = _SINGLE.fullmatch(item)
        if single is not None:
            number = float(single[1])
            if integer and not number.is_integer():
                raise GridError(
                    f"{which} values: {label} takes whole numbers; {item!r} is not one.",
                    axis=which,
                )
            values.append(number)
        else:
            match = _RANGE.fullmatch(item)
            if match is None:
                raise GridError(
                    f"{which} values: {item!r} is not a number or a range. Write a list "
                    "(3, 4.5, 6) or a range (20-40 (+10), or 1-10 [5] for 5 values).",
                    axis=which,
                )
            limit = MAX_CELLS - len(values)
            values += _range_values(match, integer=integer, item=item, which=which, limit=limit)
        _check_count(values, which)
    if not values:
        raise GridError(f"{which} values: type at least one {label} value.", axis=which)
    return values


def _check_count(values: Sequence[Any], which: str) -> None:
    """Stop reading an axis's values as soon as they pass what a grid holds."""
    if len(values) > MAX_CELLS:
        raise GridError(
            f"{which} values: {len(values)}+ values; a grid holds at most {MAX_CELLS} cells.",
            axis=which,
        )


def _check_range(
    values: Sequence[float], low: float, high: float, *, which: str, label: str
) -> None:
    for value in values:
        if not low <= value <= high:
            raise GridError(
                f"{which} values: {_fmt(value)} is out of range for {label} "
                f"({_fmt(low)}–{_fmt(high)}).",
                axis=which,
            )


def _slg_values(items: Sequence[str], ranges: Ranges, which: str) -> list[float | None]:
    """`off`, `on` (the family's default scale) or scales (lists and ranges); 0 is off."""
    values: list[float | None] = []
    for item in items:
        word = item.lower()
        if not item:
            continue
        if word in SLG_OFF:
            values.append(None)
        elif word in SLG_ON:
            values.append(ranges.slg_default)
        else:
            numbers = _numbers([item], integer=False, which=which, label="SLG")
            _check_range(numbers, *ranges.slg, which=which, label="SLG scale")
            values += [number or None for number in numbers]
        _check_count(values, which)
    if not values:
        raise GridError(f"{which} values: type on, off or SLG scales.", axis=which)
    return values


def _sr_values(items: Sequence[str], *, prompt: str, negative_prompt: str, which: str) -> list[str]:
    if not items or not items[0]:
        raise GridError(
            f"{which} values: Prompt S/R needs the text to search for first, then its "
            "replacements (red, blue, green).",
            axis=which,
        )
    if len(items) > MAX_CELLS:
        raise GridError(
            f"{which} values: {len(items)} values; a grid holds at most {MAX_CELLS} cells.",
            axis=which,
        )
    search = items[0]
    if search not in prompt and search not in negative_prompt:
        raise GridError(
            f"{which} values: Prompt S/R did not find {search[:80]!r} in the prompt or the "
            "negative prompt. The first value is the text to search for.",
            axis=which,
        )
    return list(items)


def parse_axis(
    kind: str,
    text: str,
    *,
    ranges: Ranges = Ranges(),
    prompt: str = "",
    negative_prompt: str = "",
    lora: str = "",
    which: str = "X",
) -> Axis:
    """Read one axis's typed values; raise `GridError` naming the bad value and the range."""
    if kind not in AXES:
        known = ", ".join(AXES)
        raise GridError(f"{which} axis: unknown axis {kind[:40]!r} (one of {known}).", axis=which)
    spec = AXES[kind]
    items = split_values(text, which=which)
    values: list[Any]
    if spec.value == "text":
        values = _sr_values(items, prompt=prompt, negative_prompt=negative_prompt, which=which)
        labels = [v[:MAX_LABEL_CHARS] if v else "(empty)" for v in values]
    elif spec.value == "slg":
        values = _slg_values(items, ranges, which)
        labels = ["off" if v is None else _fmt(v) for v in values]
    else:
        integer = spec.value == "int"
        values = _numbers(items, integer=integer, which=which, label=spec.label)
        if kind == "strength" and ranges.strength is None:
            raise GridError(
                f"{which} axis: Strength applies to image-to-image only; this mode has none.",
                axis=which,
            )
        low, high = getattr(ranges, kind)
        _check_range(values, low, high, which=which, label=spec.label)
        if integer:
            values = [int(v) for v in values]
        labels = [_fmt(v) for v in values]
    if kind == "lora_weight" and not lora:
        raise GridError(f"{which} axis: choose the LoRA whose weight the axis varies.", axis=which)
    return Axis(
        kind=kind,
        values=tuple(values),
        labels=tuple(labels),
        text=" ".join(text.split())[:MAX_AXIS_TEXT],
        lora=lora if kind == "lora_weight" else "",
    )


# --- the whole grid -----------------------------------------------------------------------
def _apply(
    axis: Axis, value: Any, fields: dict[str, Any], loras: list[LoraChoice], changed: dict
) -> None:
    """Apply one axis value to a cell's request fields and LoRAs (A1111: X first, then Y)."""
    if axis.kind == "seed":
        fields["seed"] = changed["seed"] = value
    elif axis.kind == "guidance":
        fields["guidance_scale"] = changed["guidance_scale"] = float(value)
    elif axis.kind == "steps":
        fields["num_inference_steps"] = changed["num_inference_steps"] = value
    elif axis.kind in ("slg", "strength"):
        changed["slg_scale" if axis.kind == "slg" else "strength"] = value
    elif axis.kind == "lora_weight":
        changed["lora_weight"] = (axis.lora, float(value))
        for i, choice in enumerate(loras):
            if choice.name == axis.lora:
                loras[i] = LoraChoice(axis.lora, float(value))
                break
        else:
            loras.append(LoraChoice(axis.lora, float(value)))
    elif axis.kind == "prompt_sr":
        search = axis.values[0]
        for key in ("prompt", "negative_prompt"):
            fields[key] = changed[key] = fields[key].replace(search, value)


def _cell_request(
    base: GenerationRequest,
    fields: dict[str, Any],
    changed: Mapping[str, Any],
    *,
    loras: Sequence[LoraChoice],
    base_extra: Mapping[str, Any],
    slg_layers: Sequence[int],
) -> GenerationRequest:
    extra = dict(base_extra)
    if "slg_scale" in changed:
        scale = changed["slg_scale"]
        # The axis decides on/off and the scale; the form's window (start/stop) stays.
        extra.pop("skip_guidance_layers", None)
        extra.pop("skip_layer_guidance_scale", None)
        if scale is not None:
            extra["skip_guidance_layers"] = tuple(slg_layers)  # hashable: requests are frozen
            extra["skip_layer_guidance_scale"] = float(scale)
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(GenerationRequest)}
    values.update(fields, num_images=1, loras=tuple(loras))
    if "strength" in changed:  # the mode's own option (image-to-image, issue 18)
        values["mode_options"] = {**base.mode_options, "strength": float(changed["strength"])}
    if not extra and type(base) is GenerationRequest:
        return GenerationRequest(**values)
    return GridCellRequest(**values, extra=tuple(sorted(extra.items())))


def ranges_for(base: GenerationRequest) -> Ranges:
    """The form's ranges for `base`'s mode: a strength axis exists when the mode has a
    `strength` option (image-to-image), with that option's range."""
    from core.modes import get_mode

    option = get_mode(base.mode).option("strength")
    strength = None if option is None else (float(option.low), float(option.high))
    return Ranges(strength=strength)


def limit_message(count: int, allowance: Allowance) -> str:
    """Why a grid of `count` cells does not fit in `allowance`, with the numbers."""
    held = (
        f" ({allowance.held} {'is' if allowance.held == 1 else 'are'} still being made in "
        "another tab or request)"
        if allowance.held
        else ""
    )
    return (
        f"This grid has {count} cells ({count} images) but you have {allowance.left} of "
        f"{allowance.limit} images left today{held}. Use fewer values, or wait until "
        f"{allowance.resets_in()}."
    )


def _allowance_check(count: int, allowance: Allowance | None) -> None:
    if allowance is None or allowance.unlimited or count <= allowance.left:
        return
    raise LimitReached(limit_message(count, allowance), allowance=allowance, wanted=count)


def plan_grid(
    base: GenerationRequest,
    *,
    x_kind: str,
    x_text: str,
    y_kind: str | None = None,
    y_text: str = "",
    x_lora: str = "",
    y_lora: str = "",
    loras: Sequence[LoraChoice] | None = None,
    ranges: Ranges | None = None,
    base_extra: Mapping[str, Any] | None = None,
    slg_layers: Sequence[int] = (),
    allowance: Allowance | None = None,
    max_cells: int = MAX_CELLS,
) -> GridPlan:
    """Parse and check both axes and every cell; return the cells in run order.

    `base` is the form's request (its `num_images` is ignored: one image per cell; a
    strength axis sets its mode's `strength` option); `loras` the LoRAs every cell starts
    from (None: `base.loras`, the form's); `base_extra` pipeline arguments the form adds (SLG on);
    `slg_layers` the family's SLG layers (SD3.5 Medium: 7, 8, 9). Raise `GridError` for a bad
    value or too many cells, `LimitReached` when the cells exceed `allowance.left` — both
    before anything runs. `ranges` default to `ranges_for(base)`.
    """
    ranges = ranges_for(base) if ranges is None else ranges
    loras = base.loras if loras is None else tuple(loras)
    x = parse_axis(
        x_kind,
        x_text,
        ranges=ranges,
        prompt=base.prompt,
        negative_prompt=base.negative_prompt,
        lora=x_lora,
        which="X",
    )
    y = None
    if y_kind:
        if (
            y_kind == x_kind
            and y_kind != "prompt_sr"
            and (y_kind != "lora_weight" or y_lora == x_lora)
        ):
            raise GridError(
                f"X and Y are both {AXES[x_kind].label}: choose another Y axis.", axis="Y"
            )
        y = parse_axis(
            y_kind,
            y_text,
            ranges=ranges,
            prompt=base.prompt,
            negative_prompt=base.negative_prompt,
            lora=y_lora,
            which="Y",
        )
    rows = len(y) if y is not None else 1
    count = len(x) * rows
    if count > max_cells:
        raise GridError(
            f"This grid has {len(x)} × {rows} = {count} cells; at most {max_cells}. "
            "Use fewer values."
        )
    if "slg" in (x_kind, y_kind) and not slg_layers:
        raise GridError("SLG: this model family names no layers to skip.")
    _allowance_check(count, allowance)
    cells = _expand(base, x, y, loras=loras, base_extra=base_extra or {}, slg_layers=slg_layers)
    return GridPlan(x=x, y=y, cells=tuple(cells), notes=tuple(_notes(cells, base)))


def _expand(
    base: GenerationRequest,
    x: Axis,
    y: Axis | None,
    *,
    loras: Sequence[LoraChoice],
    base_extra: Mapping[str, Any],
    slg_layers: Sequence[int],
) -> list[Cell]:
    """Every cell's request and LoRAs, row-major with Y outer; each request validated."""
    cells: list[Cell] = []
    for row in range(len(y) if y is not None else 1):
        for column in range(len(x)):
            fields = {"prompt": base.prompt, "negative_prompt": base.negative_prompt}
            cell_loras = list(loras)
            changed: dict[str, Any] = {}
            _apply(x, x.values[column], fields, cell_loras, changed)
            if y is not None:
                if (
                    y.kind == "prompt_sr"
                    and y.values[0] not in fields["prompt"] + "\n" + fields["negative_prompt"]
                ):
                    raise GridError(
                        f"Y values: after X's replacement {x.labels[column][:40]!r}, Prompt S/R "
                        f"no longer finds {y.values[0][:40]!r}.",
                        axis="Y",
                    )
                _apply(y, y.values[row], fields, cell_loras, changed)
            try:
                request = _cell_request(
                    base,
                    fields,
                    changed,
                    loras=cell_loras,
                    base_extra=base_extra,
                    slg_layers=slg_layers,
                )
            except InvalidRequest as exc:
                raise GridError(f"Cell {len(cells) + 1}: {exc}") from exc
            cells.append(
                Cell(
                    index=len(cells),
                    column=column,
                    row=row,
                    x_label=x.labels[column],
                    y_label=y.labels[row] if y is not None else "",
                    request=request,
                    overrides=changed,
                )
            )
    return cells


def _notes(cells: Sequence[Cell], base: GenerationRequest) -> list[str]:
    notes = []
    if base.num_images > 1:
        notes.append(f"One image per cell (Images is {base.num_images} in the form).")
    slg_cells = [c for c in cells if c.overrides.get("slg_scale") is not None]
    without_cfg = [c.index + 1 for c in slg_cells if c.request.guidance_scale <= 1]
    if without_cfg:
        notes.append(
            "SLG acts only with guidance above 1: no effect in cell(s) "
            + ", ".join(map(str, without_cfg[:10]))
            + "."
        )
    outside = [c.index + 1 for c in slg_cells if not _slg_acts(c.request)]
    if outside:
        notes.append(
            "SLG acts only between its start and stop fractions of the steps, which hold no "
            "step in cell(s) " + ", ".join(map(str, outside[:10])) + " (more steps help)."
        )
    return notes


def _slg_acts(request: GenerationRequest) -> bool:
    """Whether diffusers' SLG window (start·steps < i < stop·steps) holds any step i."""
    extra = dict(getattr(request, "extra", ()))
    steps = request.num_inference_steps
    start = steps * extra.get("skip_layer_guidance_start", DEFAULT_SLG_START)
    stop = steps * extra.get("skip_layer_guidance_stop", DEFAULT_SLG_STOP)
    return any(start < i < stop for i in range(steps))


def distinct_prompts(plan: GridPlan) -> int:
    """How many different (prompt, negative prompt, CFG on/off) the cells encode."""
    return len(
        {
            (c.request.prompt, c.request.negative_prompt, c.request.guidance_scale > 1)
            for c in plan.cells
        }
    )
