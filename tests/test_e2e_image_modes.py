"""Working on an image in a real browser (issue 18): Vary a result, and Inpaint a stroke
painted with the mouse on the canvas (streamlit-drawable-canvas), in headless Chromium.

The same harness as `test_e2e_browser.py` (its tab helpers), on conftest's shared Chromium
and shared demo app server (`chromium`, `demo_app`), in a tab of its own (a new Streamlit
session). The tests run in file order on that tab: generate → Vary → Inpaint; each finds its
records as the newest in the shared history (browser tests run one at a time, on one worker).
Screenshots go where `E2E_SCREENSHOTS` says (see test_e2e_browser.py).
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from tests.test_e2e_browser import (
    BROWSER_MARKS,
    TIMEOUT_MS,
    _click_generate,
    _download_png,
    _fill_small,
    _say,
    _screenshot_dir,
    new_tab,
)

pytestmark = BROWSER_MARKS


@pytest.fixture(name="tab", scope="module")
def fixture_tab(chromium, demo_app, tmp_path_factory, pytestconfig):
    """A tab on the shared demo app (conftest's `demo_app`) with one fixed-seed 512², 2-step
    result on screen."""
    shots = _screenshot_dir(tmp_path_factory)
    _say(pytestconfig, f"\ne2e image-mode server log: {demo_app.log_path}")
    with new_tab(chromium, demo_app, shots) as tab:
        tab.open()
        _fill_small(tab)
        _click_generate(tab)
        yield tab


def _store(tab):
    from core.history import HistoryStore

    return HistoryStore(tab.server.data_dir, repair=False)


def _press(tab, key: str) -> None:
    """Click the button Streamlit drew under `key` and wait for the run it starts."""
    tab.page.locator(f".st-key-{key} button").first.click()
    tab.settle()
    tab.assert_no_exception()


def test_vary_on_a_result_makes_a_new_image_whose_png_says_denoising_strength(tab):
    """Vary under the result: the generator works on that image; Generate makes a new one
    whose PNG carries A1111's `Denoising strength`."""
    from playwright.sync_api import expect

    page = tab.page
    _press(tab, "work_0_img2img")
    expect(page.get_by_text(re.compile(r"^Working on 512×512: Seed \d+"))).to_be_visible()
    expect(page.get_by_text("2 steps × 0.6 = 2 steps run")).to_be_visible()
    tab.shoot("work-vary", width=1400)
    _click_generate(tab)
    parameters = Image.open(io.BytesIO(_download_png(tab))).info["parameters"]
    assert "Denoising strength: 0.6" in parameters, parameters
    newest = _store(tab).page().records[0]
    assert newest.mode == "img2img" and newest.source_record


def test_a_stroke_painted_with_the_mouse_is_inpainted_and_the_rest_kept(tab):
    """Inpaint: a stroke drawn on the canvas becomes the mask; the new image equals the
    source at every pixel outside the blurred stroke."""
    from playwright.sync_api import expect

    from core import history
    from core.masks import blur_mask

    page = tab.page
    _press(tab, "work_0_inpaint")
    canvas = page.locator(".st-key-work_on_image canvas").last
    canvas.wait_for(state="visible", timeout=TIMEOUT_MS)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert round(box["width"]) == 360  # 512² shown at 360², painted back at 512²
    page.mouse.move(box["x"] + 60, box["y"] + 170)
    page.mouse.down()
    for i in range(1, 31):
        page.mouse.move(box["x"] + 60 + i * 8, box["y"] + 170 + i * 2, steps=2)
    page.mouse.up()
    expect(page.get_by_text(re.compile(r"^Repainting \d+\.\d% of the image"))).to_be_visible(
        timeout=TIMEOUT_MS
    )
    tab.settle()
    tab.shoot("work-inpaint", width=1400)
    _click_generate(tab)
    store = _store(tab)
    record = store.page().records[0]
    assert record.mode == "inpaint" and record.mask_sha256
    source, mask = history.record_inputs(store, record)
    painted = np.asarray(mask.image("L")) > 127
    rows, cols = np.nonzero(painted)
    assert 240 < rows.mean() < 330 and 200 < cols.mean() < 320  # where it went, ×512/360
    made = np.asarray(Image.open(io.BytesIO(store.png_bytes(record.id))).convert("RGB"))
    outside = np.asarray(blur_mask(mask.image("L"), record.options()["mask_blur"])) == 0
    assert (made[outside] == np.asarray(source.image("RGB"))[outside]).all()
    assert (made[painted] != np.asarray(source.image("RGB"))[painted]).any()
    tab.shoot("work-inpaint-result", width=1400)
