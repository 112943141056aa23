"""The Hardware page's memory bars in a real browser: the marks are drawn, not only the element.

Shares conftest's Chromium and demo-model app server (`chromium`, `demo_app`) in a tab of its
own; skipped where Debian's chromium is missing, never passed.
"""

from __future__ import annotations

import io

from PIL import Image

from tests.test_e2e_browser import BROWSER_MARKS, new_tab

pytestmark = BROWSER_MARKS


def _colored_pixels(png: bytes) -> int:
    """Pixels of a saturated colour (the bar's fill); the page, the empty track and the text
    are white, light grey and dark grey."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(1 for r, g, b in image.get_flattened_data() if max(r, g, b) - min(r, g, b) > 60)


def test_memory_bars_are_drawn(chromium, demo_app, tmp_path):
    """Each memory's bar shows a filled share in use (RAM always has some), with used, free
    and total beside it, and what the plan needs next to the memory it needs it in."""
    from playwright.sync_api import expect

    with new_tab(chromium, demo_app, tmp_path) as tab:
        tab.open()
        tab.nav("Hardware")
        tab.assert_no_exception()
        main = tab.page.get_by_test_id("stMain")
        ram = main.get_by_test_id("stProgress").filter(has_text="RAM: ")
        expect(ram).to_have_count(1)
        text = ram.inner_text()
        assert " used · " in text and " free of " in text, text
        assert "the plan needs " in text, text
        ram.scroll_into_view_if_needed()
        png = ram.screenshot()
        (tmp_path / "memory-bar.png").write_bytes(png)
        width, height = Image.open(io.BytesIO(png)).size
        assert width > 100 and height > 10
        assert _colored_pixels(png) > 50, "the bar's fill is drawn"
        # No Vega chart left to fail on scale bindings.
        expect(main.locator("[data-testid=stVegaLiteChart]")).to_have_count(0)
