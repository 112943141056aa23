"""Styles: A1111's apply rule and its styles.csv, read and written, hostile files included."""

from __future__ import annotations

import pytest

from core.generation import MAX_PROMPT_CHARS
from core.styles import (
    MAX_CSV_BYTES,
    MAX_STYLES,
    Style,
    StyleError,
    apply_styles,
    export_csv,
    import_csv,
    merge,
)

# A styles.csv as A1111 writes it: UTF-8 with BOM, csv.DictWriter (CRLF, minimal quoting).
A1111_CSV = (
    "\ufeffname,prompt,negative_prompt\r\n"
    'Cinematic,"cinematic still of {prompt}, shallow depth of field","cartoon, drawing"\r\n'
    "Watercolor,watercolor painting,\r\n"
    '"Quote ""this""","line one\nline two",\r\n'
).encode()


@pytest.mark.parametrize(
    ("template", "prompt", "result"),
    [
        (
            "cinematic still of {prompt}, film grain",
            "a fox",
            "cinematic still of a fox, film grain",
        ),
        ("{prompt}, {prompt}", "fox", "fox, fox"),
        ("film grain", "a fox", "a fox, film grain"),
        ("film grain", "", "film grain"),
        ("", "a fox", "a fox"),
        ("  film grain ", " a fox ", "a fox, film grain"),
        ("{prompt}", "", ""),
    ],
)
def test_apply_follows_a1111s_merge_rule(template, prompt, result):
    """`{prompt}` is replaced; otherwise the style is appended after ", " (empty parts dropped)."""
    assert merge(template, prompt) == result


def test_styles_apply_in_order_to_both_prompts():
    styles = [Style("a", "{prompt}, oil", "blurry"), Style("b", "dusk", "{prompt}, text")]
    assert apply_styles("a fox", "", styles) == ("a fox, oil, dusk", "blurry, text")


def test_an_a1111_styles_csv_reads_with_quotes_newlines_and_bom():
    imported = import_csv(A1111_CSV)
    assert imported.skipped == ()
    assert imported.styles == (
        Style(
            "Cinematic", "cinematic still of {prompt}, shallow depth of field", "cartoon, drawing"
        ),
        Style("Watercolor", "watercolor painting", ""),
        Style('Quote "this"', "line one\nline two", ""),
    )


def test_export_then_import_round_trips_and_matches_a1111s_layout():
    """What we write reads back the same, and is byte for byte what A1111 writes."""
    styles = import_csv(A1111_CSV).styles
    data = export_csv(styles)
    assert data == A1111_CSV
    assert import_csv(data).styles == styles


def test_unicode_survives_the_round_trip():
    styles = (Style("Ukiyo-e 浮世絵", "木版画 of {prompt} — ✨", "ぼかし"),)
    assert import_csv(export_csv(styles)).styles == styles


def test_formula_like_cells_are_guarded_on_export_and_unguarded_on_import():
    """A cell starting with = + - @ gets a leading ' in the file; our import removes it."""
    styles = (
        Style('=HYPERLINK("http://x")', "-noise, {prompt}", "@bad"),
        Style("plain", "'quoted' {prompt}", "+1"),
    )
    data = export_csv(styles).decode("utf-8-sig")
    assert "'=HYPERLINK" in data and "'-noise" in data and "'@bad" in data and "'+1" in data
    assert ",'quoted' {prompt}," in data  # an apostrophe before a harmless character stays
    assert import_csv(export_csv(styles)).styles == styles


def test_the_old_text_column_and_extra_columns_are_read():
    data = b"name,text,description\r\nOld,old style {prompt},ignored\r\n"
    assert import_csv(data).styles == (Style("Old", "old style {prompt}", ""),)


def test_later_rows_of_the_same_name_win_and_bad_rows_are_listed():
    data = (
        "name,prompt,negative_prompt\n"
        "A,first,\n"
        ",no name,\n"
        f"Long,{'x' * (MAX_PROMPT_CHARS + 1)},\n"
        "A,second,\n"
    ).encode()
    imported = import_csv(data)
    assert imported.styles == (Style("A", "second", ""),)
    assert imported.skipped[0].startswith("row 2: A style needs a name")
    assert imported.skipped[1].startswith("row 3: The style's prompt is 10,001 characters")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"name;prompt\nA;b\n", "must name the columns"),
        (b"", "must name the columns"),
        ("name,prompt\nCaf\xe9,x\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at position"),
        (b"name,prompt\nA,b\0c\n", "NUL characters"),
        (b"name,prompt\nA," + b"x" * 200_000 + b"\n", "not valid CSV near line"),
        (b"name,prompt\n" + b"x" * (MAX_CSV_BYTES + 1), "MiB is refused"),
    ],
)
def test_hostile_or_wrong_files_are_refused_saying_why(data, says):
    with pytest.raises(StyleError) as caught:
        import_csv(data)
    assert says in str(caught.value)


def test_at_most_max_styles_rows_are_read():
    rows = "".join(f"s{i},p{i},\n" for i in range(MAX_STYLES + 5))
    imported = import_csv(("name,prompt,negative_prompt\n" + rows).encode())
    assert len(imported.styles) == MAX_STYLES
    assert imported.skipped == (f"rows after {MAX_STYLES}: at most {MAX_STYLES} styles are read",)


@pytest.mark.parametrize(
    ("name", "prompt", "says"),
    [
        ("", "x", "needs a name"),
        ("two\nlines", "x", "one line"),
        ("n" * 101, "x", "at most 100"),
        ("ok", "x" * (MAX_PROMPT_CHARS + 1), "the limit is 10,000"),
    ],
)
def test_a_style_is_checked_when_made(name, prompt, says):
    with pytest.raises(StyleError, match=says):
        Style(name, prompt)
