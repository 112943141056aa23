"""Named prompt styles: apply them, and read and write A1111's `styles.csv`. Pure functions.

A style is a prompt template and an optional negative prompt. Applying follows A1111
(`modules/styles.py` `merge_prompts`): a template holding `{prompt}` has it replaced by the
user's prompt; otherwise the two are joined with ", " (prompt first), empty parts dropped.
The same rule applies to the negative prompt.

`styles.csv` is A1111's file: columns `name,prompt,negative_prompt`, UTF-8 with a BOM, read
with `csv.DictReader` (an old `text` column stands for `prompt`). Imports are bounded
(MAX_CSV_BYTES, MAX_STYLES rows, MAX_PROMPT_CHARS per field) and must be UTF-8; a bad
row is reported, not guessed at. Exports guard against spreadsheet formula injection: a
cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'` (OWASP's advice), which
the import here takes off again; A1111 itself would keep it, but prompts rarely start
with those characters and a `.csv` is likely to be opened in a spreadsheet.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

from core.generation import MAX_PROMPT_CHARS

PLACEHOLDER = "{prompt}"
MAX_NAME_CHARS = 100
MAX_STYLES = 1000
MAX_CSV_BYTES = 2 * 2**20
COLUMNS = ("name", "prompt", "negative_prompt")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_BOM = "\ufeff"


class StyleError(ValueError):
    """A style or a styles.csv cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""

    def __post_init__(self) -> None:
        problem = style_problem(self.name, self.prompt, self.negative_prompt)
        if problem:
            raise StyleError(problem)


def style_problem(name: str, prompt: str, negative_prompt: str) -> str | None:
    """Why these cannot be a style, or None."""
    if not isinstance(name, str) or not name.strip():
        return "A style needs a name."
    if len(name) > MAX_NAME_CHARS or "\n" in name or "\r" in name:
        return f"A style name is one line of at most {MAX_NAME_CHARS} characters."
    for label, text in (("prompt", prompt), ("negative prompt", negative_prompt)):
        if not isinstance(text, str):
            return f"The style's {label} must be text."
        if len(text) > MAX_PROMPT_CHARS:
            return (
                f"The style's {label} is {len(text):,} characters; the limit is "
                f"{MAX_PROMPT_CHARS:,}."
            )
    return None


def merge(template: str, prompt: str) -> str:
    """A1111's `merge_prompts`: fill `{prompt}`, else join with ", " (empty parts dropped)."""
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), template.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, styles: Iterable[Style]) -> tuple[str, str]:
    """Apply `styles` in order to both prompts; return (prompt, negative prompt)."""
    for style in styles:
        prompt = merge(style.prompt, prompt)
        negative_prompt = merge(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt


# --- styles.csv -------------------------------------------------------------------------
@dataclass(frozen=True)
class Imported:
    """Styles read from a styles.csv, and the rows left out with why (1-based data rows)."""

    styles: tuple[Style, ...]
    skipped: tuple[str, ...] = ()


def _unguard(text: str) -> str:
    """Take off the `'` that `export_csv` puts before a formula-like cell."""
    if len(text) >= 2 and text[0] == "'" and text[1] in FORMULA_START:
        return text[1:]
    return text


def _guard(text: str) -> str:
    if text.startswith(FORMULA_START) or (text.startswith("'") and text[1:2] in FORMULA_START):
        return "'" + text
    return text


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StyleError(
            f"The file is not UTF-8 text (byte {data[exc.start]:#04x} at position "
            f"{exc.start:,}). Save it as UTF-8 (A1111 writes styles.csv as UTF-8) and try again."
        ) from None


def import_csv(data: bytes) -> Imported:
    """Read A1111's styles.csv; raise `StyleError` for a file that cannot be one.

    Later rows with the same name replace earlier ones (A1111 keeps the last). Rows without
    a name, or with a field over the limits, are skipped and listed.
    """
    if len(data) > MAX_CSV_BYTES:
        raise StyleError(
            f"The file is {len(data) / 2**20:.1f} MiB; a styles.csv over "
            f"{MAX_CSV_BYTES // 2**20} MiB is refused."
        )
    text = _decode(data).removeprefix(_BOM)
    if "\0" in text:
        raise StyleError("The file holds NUL characters: it is not a CSV text file.")
    reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "name" not in fields or not ({"prompt", "text"} & set(fields)):
        raise StyleError(
            "The first line must name the columns name, prompt, negative_prompt (A1111's "
            "styles.csv)."
        )
    reader.fieldnames = fields
    styles: dict[str, Style] = {}
    skipped: list[str] = []
    try:
        for number, row in enumerate(reader, start=1):
            if number > MAX_STYLES:
                skipped.append(f"rows after {MAX_STYLES}: at most {MAX_STYLES} styles are read")
                break
            name = _unguard((row.get("name") or "").strip())
            prompt = row.get("prompt")
            prompt = row.get("text") if prompt is None else prompt
            negative = row.get("negative_prompt") or ""
            problem = style_problem(name, _unguard(prompt or ""), _unguard(negative))
            if problem:
                skipped.append(f"row {number}: {problem}")
                continue
            styles.pop(name, None)  # the last one wins, in the last one's place
            styles[name] = Style(name, _unguard(prompt or ""), _unguard(negative))
    except csv.Error as exc:
        raise StyleError(f"The file is not valid CSV near line {reader.line_num}: {exc}.") from None
    return Imported(tuple(styles.values()), tuple(skipped))


def export_csv(styles: Iterable[Style]) -> bytes:
    """A1111's styles.csv (UTF-8 with BOM, CRLF rows), formula-like cells guarded."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for style in styles:
        writer.writerow([_guard(style.name), _guard(style.prompt), _guard(style.negative_prompt)])
    return (_BOM + out.getvalue()).encode("utf-8")
