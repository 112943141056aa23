"""An X/Y grid in a real browser: the shared app on the demo model (conftest's `demo_app`)
and the shared headless Debian Chromium, as in test_e2e_browser.py. A 2×2 grid is typed
into its section, its cell count shows before the click, it runs, and its labelled PNG
downloads with the axes in its metadata. Without chromium the test is skipped, never
passed."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from core.metadata import parse_parameters, read_png_text
from tests.test_e2e_browser import (
    BROWSER_MARKS,
    TIMEOUT_MS,
    _fill_small,
    _screenshot_dir,
    new_tab,
)

pytestmark = BROWSER_MARKS


@pytest.fixture(name="tab", scope="module")
def fixture_tab(chromium, demo_app, tmp_path_factory):
    """A tab of its own (a new Streamlit session) on the shared app."""
    with new_tab(chromium, demo_app, _screenshot_dir(tmp_path_factory)) as tab:
        yield tab


def _choose(tab, label: str, option: str) -> None:
    """Pick `option` in the select box labelled `label`, as a user does: open it and click
    the option, then check the box shows it. A script run the page starts on its own (the
    sidebar's status once the model is in) redraws the box and closes an open list; then
    the list is opened again, as a person would (typing the name and pressing Enter could
    take the first option before the list had filtered)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    page = tab.page
    box = page.get_by_role("combobox", name=label)
    choice = page.get_by_role("option", name=option, exact=True)
    for _ in range(5):
        box.scroll_into_view_if_needed()
        box.click()
        with contextlib.suppress(PlaywrightTimeout):
            choice.click(timeout=10_000)
        tab.settle()
        if box.input_value() == option:  # a run that redrew the box may have undone it
            break
    expect(page.get_by_role("combobox", name=label)).to_have_value(option)


def _type(tab, label: str, text: str) -> None:
    field = tab.page.get_by_label(label, exact=True)
    field.fill(text)
    field.press("Tab")  # leaving the field sends its value (Enter would add a line to a box)
    tab.settle()


def test_a_2x2_grid_is_built_and_its_labelled_png_downloaded(tab):
    """Guidance 3, 6 × Prompt S/R red, blue: "4 cells" before the click, then the grid with
    the cells drawn under their labels, and a PNG whose `parameters` name both axes."""
    from playwright.sync_api import expect

    page = tab.page
    tab.open()
    _fill_small(tab)
    _type(tab, "Prompt", "a red lighthouse on a cliff")
    page.get_by_text("X/Y grid", exact=True).click()
    _choose(tab, "X axis", "Guidance")
    _type(tab, "X values", "3, 6")
    _choose(tab, "Y axis", "Prompt S/R")
    _type(tab, "Y values", "red, blue")
    expect(page.get_by_text("2 × 2 = 4 cells · 4 images")).to_be_visible()
    page.get_by_role("button", name="Generate grid").click()
    download = page.get_by_role("button", name="Download grid PNG")
    expect(download).to_be_visible(timeout=TIMEOUT_MS)
    tab.settle()
    tab.assert_no_exception()
    expect(page.get_by_text("Grid · 4 cells")).to_be_visible()
    # The run's progress goes once the page is drawn again with the grid.
    expect(page.get_by_text(re.compile(r"^Cell \d+ of 4"))).to_have_count(0)
    tab.shoot("generate-grid", height=1400)
    with page.expect_download() as got:
        download.click()
    png = Path(got.value.path()).read_bytes()
    tab.settle()
    with Image.open(io.BytesIO(png)) as picture:
        width, height = picture.size
    assert width > 2 * 512 and height > 2 * 512  # two cells each way, plus the labels
    parsed = parse_parameters(read_png_text(png)["parameters"])
    assert parsed.values["prompt"] == "a red lighthouse on a cliff"
    assert (parsed.extras["X Type"], parsed.extras["X Values"]) == ("Guidance", "3, 6")
    assert (parsed.extras["Y Type"], parsed.extras["Y Values"]) == ("Prompt S/R", "red, blue")
