"""Unload while another tab generates, in a real browser on conftest's shared demo app: the
running generation finishes and shows its image (nothing is pulled from under it), then the
weights go, and the Unload tab says so. Two tabs of their own on the shared Chromium.
"""

from __future__ import annotations

import re

from tests.test_e2e_browser import BROWSER_MARKS, TIMEOUT_MS, new_tab

pytestmark = BROWSER_MARKS


def test_unload_while_another_tab_generates(chromium, demo_app, tmp_path):
    from playwright.sync_api import expect

    with (
        new_tab(chromium, demo_app, tmp_path) as maker,
        new_tab(chromium, demo_app, tmp_path) as admin,
    ):
        maker.open()
        page = maker.page
        page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")
        steps = page.get_by_role("slider", name="Steps")
        steps.focus()
        steps.press("End")  # the most steps: a generation long enough to unload during
        maker.settle()
        admin.open()
        admin.nav("Hardware")
        page.get_by_role("button", name="Generate").click()
        # The generation is running: its step progress is on the maker's page.
        running = page.get_by_test_id("stMain").get_by_text(re.compile(r"[Ss]tep \d+/100"))
        expect(running.first).to_be_visible(timeout=TIMEOUT_MS)
        admin.page.get_by_role("button", name="Unload model").click()
        result = page.locator("[data-testid=stImage]", has_text=re.compile(r"^Seed \d+$"))
        expect(result.locator("img").first).to_be_visible(timeout=TIMEOUT_MS)
        maker.settle()
        maker.assert_no_exception()
        assert "Stopped" not in maker.main_text()
        admin.settle()
        admin.assert_no_exception()
        main = admin.page.get_by_test_id("stMain")
        expect(
            main.get_by_text("Model unloaded; the next generation loads it again.")
        ).to_be_visible()
        expect(main.get_by_text("State: not loaded")).to_be_visible()
