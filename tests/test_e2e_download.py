"""The first run in a real browser: download progress from a throttled Hub stand-in, then an image.

`streamlit run` with SD_MODEL set to SD3.5 Medium's repo id and HF_ENDPOINT on a loopback
stand-in serving the saved tiny pipeline; headless Debian Chromium clicks the draft preset
and Generate, and reads the bytes progress and the sidebar while the download runs.
"""

from __future__ import annotations

import re

from testkit.hub_standin import REPO_ID, HubStandIn
from tests.test_e2e_browser import (
    BROWSER_MARKS,
    TIMEOUT_MS,
    StreamlitServer,
    _screenshot_dir,
    serving_tab,
)

pytestmark = BROWSER_MARKS


class HubServer(StreamlitServer):
    """The app on a hub id, downloading from the stand-in into a fresh HF_HOME."""

    def __init__(self, *, hub_url: str, hf_home, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hub_url = hub_url
        self.hf_home = hf_home

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("HF_HUB_OFFLINE", None)
        env.update(
            SD_MODEL=REPO_ID,
            HF_ENDPOINT=self.hub_url,
            HF_HOME=str(self.hf_home),
        )
        return env


def test_first_run_shows_download_progress_then_the_image(
    chromium, demo_dir, tmp_path, tmp_path_factory
):
    """Draft preset, Generate: "Downloading: … of 1.8 MB" and the sidebar follow, then an image."""
    from playwright.sync_api import expect

    hub = HubStandIn(demo_dir, bytes_per_second=100_000).start()
    server = HubServer(
        hub_url=hub.url,
        hf_home=tmp_path / "hf",
        data_dir=tmp_path / "data",
        log_path=tmp_path / "streamlit.log",
    )
    shots = _screenshot_dir(tmp_path_factory)
    try:
        with serving_tab(chromium, server, shots) as browser:
            page = browser.page
            browser.open()
            main = page.get_by_test_id("stMain")
            expect(main.get_by_text("≈ 35 min at 1024², 40 steps on this CPU")).to_be_visible(
                timeout=TIMEOUT_MS
            )
            page.get_by_role("button", name="Draft: 512², 20 steps").click()
            expect(main.get_by_text(re.compile(r"at 512², 20 steps"))).to_be_visible(
                timeout=TIMEOUT_MS
            )
            # The stand-in is the tiny model under Medium's id: Medium's SLG layers (7, 8, 9)
            # are not in its 2-layer transformer, so SLG goes off as a visitor would turn it.
            switch = page.get_by_role("switch", name="Skip layer guidance")
            for _ in range(5):  # a page run under way when clicked may redraw it as it was
                browser.settle()
                if not switch.is_checked():
                    break
                switch.uncheck(force=True)  # the input itself: no label text to miss
            expect(switch).not_to_be_checked()
            browser.settle()
            page.get_by_role("button", name="Generate").click()
            progress = main.get_by_text(re.compile(r"Downloading: .+ of 1\.8 MB"))
            expect(progress).to_be_visible(timeout=TIMEOUT_MS)
            sidebar = page.get_by_test_id("stSidebar")
            expect(
                sidebar.get_by_text(re.compile(r"Status: loading · Downloading: "))
            ).to_be_visible(timeout=TIMEOUT_MS)
            expect(main.get_by_role("button", name="Cancel download")).to_be_visible(
                timeout=TIMEOUT_MS
            )
            browser.shoot("first-run-download")
            expect(main.get_by_text(re.compile(r"Seed \d+ · 512×512 · 20 steps"))).to_be_visible(
                timeout=TIMEOUT_MS
            )
            expect(sidebar.get_by_text(re.compile(r"Status: loaded on cpu"))).to_be_visible(
                timeout=TIMEOUT_MS
            )
            browser.assert_no_exception()
    finally:
        hub.stop()
    assert not list((tmp_path / "hf").rglob("*.incomplete"))
    assert any(path.endswith(".safetensors") for path in hub.file_gets())
