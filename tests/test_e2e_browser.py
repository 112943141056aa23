"""The app in a real browser: `streamlit run` on loopback, driven by headless Debian Chromium.

AppTest runs the scripts but not the frontend; this walks the pages the way a user does. The
tests share one server (conftest's `demo_app`, shared with test_e2e_hostile.py) and one
browser tab and run in file order (generate → gallery → hardware → restart → gallery); each
asks for the fixtures it needs, so any one also runs alone.

Screenshots of each page go to `$E2E_SCREENSHOTS` (`1` means `docs/screenshots/`) or to the
test's temporary folder; the folder is printed. Only Debian's `chromium` is used (`.ci/run`
installs it); without it the tests are skipped, never passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from bench.common import free_port
from tests.conftest import APP_ROOT, BROWSER_TIMEOUT_MS

CHROMIUM = shutil.which("chromium")
# Every browser test file's marks (`pytestmark = BROWSER_MARKS`, plus its own where it needs more).
BROWSER_MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian chromium not installed (`apt-get install chromium`)"
    ),
]
pytestmark = BROWSER_MARKS

PROMPT = "a lighthouse on a cliff at dusk, e2e check"
SEED = 1234
TIMEOUT_MS = BROWSER_TIMEOUT_MS  # generous: the machine running the suite may be busy


class StreamlitServer:
    """`streamlit run streamlit_app.py` on a free loopback port, restartable on the same data."""

    def __init__(self, *, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.port: int | None = None  # None: a free port at each start
        self.extra_args: list[str] = []  # e.g. --secrets.files for the sign-in test
        self.extra_env: dict[str, str] = {}
        self.host = "127.0.0.1"  # another address of this machine: a non-loopback visitor

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SD_", "HF_"))}
        env.update(SD_MODEL="demo", SD_DATA_DIR=str(self.data_dir), HF_HUB_OFFLINE="1")
        if not os.environ.get("E2E_SCREENSHOTS", "").strip():
            # Fixed rather than auto, so neither a developer's .env nor the CPU's bf16 support
            # changes what the browser run exercises; the README's screenshots
            # (E2E_SCREENSHOTS) show what a default `make run` shows instead.
            env.update(SD_DEVICE="cpu", SD_DTYPE="float32")
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        port = self.port or free_port()
        self.url = f"http://{self.host}:{port}"
        command = [
            *(sys.executable, "-m", "streamlit", "run", "streamlit_app.py"),
            *("--server.address", self.host, "--server.port", str(port)),
            *("--server.headless", "true", "--server.fileWatcherType", "none"),
            *("--browser.gatherUsageStats", "false"),
            *self.extra_args,
        ]
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                command, cwd=APP_ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"streamlit did not answer on {self.url} in 60 s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


# Counts, in the page, the script runs it has seen start: Streamlit's root element carries
# data-test-script-state ("running" while a run is on). `Browser.settle` waits on that count
# instead of a fixed pause. Runs in every document the tab opens, before the app's scripts.
RUN_COUNTER = """
(() => {
  window.__e2eRuns = 0;
  let last = null;
  const check = () => {
    const app = document.querySelector("[data-testid=stApp]");
    const now = app && app.getAttribute("data-test-script-state");
    if (now === "running" && last !== "running") window.__e2eRuns += 1;
    last = now;
  };
  new MutationObserver(check).observe(document, {
    subtree: true, childList: true, attributes: true,
    attributeFilter: ["data-test-script-state"],
  });
})();
"""
RUN_STARTS_WITHIN_MS = 300  # an action that starts a script run has started it by then


@dataclass
class Browser:
    """The one tab the tests drive, the server behind it, and where screenshots go."""

    page: object
    server: StreamlitServer
    shots: Path

    def __post_init__(self) -> None:
        self.page.add_init_script(RUN_COUNTER)

    def open(self) -> None:
        """Open the app in the tab: a new Streamlit session on the generator page."""
        self.page.goto(self.server.url)
        self.page.get_by_role("button", name="Generate").wait_for()
        self.settle()

    def settle(self) -> None:
        """Wait until the script run that the last action started has finished.

        The action's run is given RUN_STARTS_WITHIN_MS to start; one seen starting after
        this call is waited for at once instead of after the whole pause. (A run seen before
        the call may be an earlier action's, so it does not end the pause.)
        """
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import expect

        seen = self.page.evaluate("() => window.__e2eRuns || 0")
        with contextlib.suppress(PlaywrightTimeout):  # no run started: only the check below
            self.page.wait_for_function(
                "seen => (window.__e2eRuns || 0) > seen", arg=seen, timeout=RUN_STARTS_WITHIN_MS
            )
        expect(self.page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=TIMEOUT_MS)

    def nav(self, title: str) -> None:
        """Change page through the sidebar navigation, keeping the session."""
        from playwright.sync_api import expect

        heading = self.page.get_by_test_id("stMain").get_by_role("heading", level=1).first
        before = heading.inner_text()
        self.page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
        expect(heading).not_to_have_text(before, timeout=TIMEOUT_MS)
        self.settle()

    def main_text(self) -> str:
        return self.page.get_by_test_id("stMain").inner_text()

    def assert_no_exception(self) -> None:
        from playwright.sync_api import expect

        expect(self.page.get_by_test_id("stException")).to_have_count(0)

    def shoot(self, name: str, *, height: int = 1000, width: int = 1280) -> Path:
        """Screenshot the tab; Streamlit scrolls inside its main area, so grow the viewport."""
        path = self.shots / f"{name}.png"
        before = self.page.viewport_size
        self.page.set_viewport_size({"width": width, "height": height})
        self.page.wait_for_timeout(300)  # let the layout follow the new size
        self.page.screenshot(path=str(path))
        self.page.set_viewport_size(before)
        return path

    def shown_sha256(self, image) -> str:
        """SHA-256 of the pixels an <img> shows, read from the image the browser decoded.

        Not from the image's URL: Streamlit drops a media file as soon as no session's
        latest run refers to it (any session's run end collects them), so the URL of an
        image still on screen can answer 404 while a rerun is under way.
        """
        return image.evaluate(_PIXELS_SHA256_JS)


_PIXELS_SHA256_JS = """async img => {
    await img.decode();  // loaded and decoded, or it throws
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", pixels));
    return Array.from(digest, b => b.toString(16).padStart(2, "0")).join("");
}"""


def _screenshot_dir(tmp_path_factory) -> Path:
    wanted = os.environ.get("E2E_SCREENSHOTS", "").strip()
    if wanted in ("1", "true", "yes"):
        folder = APP_ROOT / "docs" / "screenshots"
    elif wanted:
        folder = Path(wanted).resolve()
    else:
        folder = tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _say(config, text: str) -> None:
    """Write a line to the terminal even while pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        print(text)
    else:
        reporter.write_line(text)


@contextmanager
def new_tab(chromium, server: StreamlitServer, shots: Path) -> Iterator[Browser]:
    """One tab in a context of its own (cookies, storage) on the shared Chromium; closed after."""
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield Browser(page=page, server=server, shots=shots)
    finally:
        context.close()


@contextmanager
def serving_tab(chromium, server: StreamlitServer, shots: Path) -> Iterator[Browser]:
    """Start `server` and open a tab for it on the shared Chromium; close the tab, stop it."""
    server.start()
    try:
        with new_tab(chromium, server, shots) as tab:
            yield tab
    finally:
        server.stop()


@pytest.fixture(name="browser", scope="module")
def fixture_browser(chromium, demo_app, tmp_path_factory, pytestconfig):
    """The shared app on the demo model (conftest's `demo_app`), and a Chromium tab on it."""
    shots = _screenshot_dir(tmp_path_factory)
    _say(pytestconfig, f"\ne2e screenshots: {shots}\ne2e server log: {demo_app.log_path}")
    with new_tab(chromium, demo_app, shots) as tab:
        yield tab


def _fill_small(tab: Browser) -> None:
    """Fill the generator for a fixed-seed 512×512, 2-step image, as a user would type it.

    The prompt is typed and left there: it reaches the app when the box loses focus, or
    with the click (Ctrl+Enter in it would generate at once).
    """
    page = tab.page
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    randomize = page.get_by_label("Randomize seed", exact=True)
    if randomize.is_checked():
        randomize.uncheck(force=True)  # the real input sits under Streamlit's styled box
        tab.settle()
    for label, value in (("Seed", SEED), ("Width", 512), ("Height", 512)):
        field = page.get_by_label(label, exact=True)
        field.fill(str(value))
        field.press("Enter")
        tab.settle()
    steps = page.get_by_role("slider", name="Steps")
    steps.focus()
    steps.press("Home")  # 1 step
    steps.press("ArrowRight")  # 2 steps
    tab.settle()


def _click_generate(tab: Browser):
    """Click Generate and wait for a newly drawn result image; return its locator.

    The result is the image captioned with its seed: the live preview (captioned with its
    step) and the strip's thumbnails (no caption) are drawn too.
    """
    from playwright.sync_api import expect

    page = tab.page
    # Mark the images on screen so the wait below only accepts ones drawn after the click.
    page.locator("[data-testid=stImage] img").evaluate_all(
        "imgs => imgs.forEach(img => img.dataset.e2eOld = '1')"
    )
    page.get_by_role("button", name="Generate").click()
    result = page.locator("[data-testid=stImage]", has_text=re.compile(r"^Seed \d+$"))
    image = result.locator("img:not([data-e2e-old])").first
    expect(image).to_be_visible(timeout=TIMEOUT_MS)
    tab.settle()
    tab.assert_no_exception()
    return image


def _pixels_sha256(png: bytes) -> str:
    return hashlib.sha256(Image.open(io.BytesIO(png)).convert("RGB").tobytes()).hexdigest()


def _download_png(tab: Browser) -> bytes:
    with tab.page.expect_download() as download:
        tab.page.get_by_role("button", name="Download PNG").first.click()
    data = Path(download.value.path()).read_bytes()
    tab.settle()  # the click also reruns the page
    return data


@dataclass(frozen=True)
class Generated:
    shown_sha256: str  # of the pixels the <img> shows
    png_pixels_sha256: str  # of the pixels of the PNG the download button serves


@pytest.fixture(name="generated", scope="module")
def fixture_generated(browser) -> Generated:
    """One fixed-seed generation made through the browser, as the later steps expect it."""
    browser.open()
    _fill_small(browser)
    image = _click_generate(browser)
    return Generated(
        shown_sha256=browser.shown_sha256(image),
        png_pixels_sha256=_pixels_sha256(_download_png(browser)),
    )


def _open_gallery(tab: Browser) -> None:
    """Open the Seed history page from the sidebar and wait for the entry's card."""
    from playwright.sync_api import expect

    tab.nav("Seed history")
    tab.assert_no_exception()
    # The count can draw before the cards: wait for this entry's card, not just the run.
    main = tab.page.get_by_test_id("stMain")
    expect(main.get_by_text(f"Seed {SEED} · 512×512").first).to_be_visible(timeout=TIMEOUT_MS)
    expect(main.get_by_text(PROMPT[:20]).first).to_be_visible(timeout=TIMEOUT_MS)


def test_generate_shows_image_and_seed_then_repeats_the_same_image(browser, generated):
    """A fixed seed shows its image and seed, and Generate again shows the same pixels."""
    main = browser.main_text()
    assert f"Seed {SEED}" in main
    assert "512×512 · 2 steps" in main
    status = browser.page.get_by_test_id("stSidebar").inner_text()
    assert re.search(r"loaded on cpu", status), status

    image = _click_generate(browser)
    assert f"Seed {SEED}" in browser.main_text()
    assert browser.shown_sha256(image) == generated.shown_sha256
    # The download is the stored file: same pixels, and the settings in its A1111 chunk
    # (its JSON record holds the entry's own id and time, so the bytes differ per entry).
    download = _download_png(browser)
    assert _pixels_sha256(download) == generated.png_pixels_sha256
    parameters = Image.open(io.BytesIO(download)).info["parameters"]
    assert parameters.startswith(PROMPT) and f"Seed: {SEED}" in parameters


def test_gallery_lists_entry_and_use_these_settings_fills_generator(browser, generated):
    """The gallery shows the image's entry; Use these settings opens the generator filled in."""
    from playwright.sync_api import expect

    _open_gallery(browser)
    main = browser.main_text()
    assert str(SEED) in main
    assert PROMPT[:20] in main
    browser.shoot("gallery")

    page = browser.page
    page.get_by_role("button", name="Details").first.click()
    browser.settle()
    browser.shoot("gallery-details")
    page.get_by_role("button", name=re.compile("Use these settings")).first.click()
    expect(page.get_by_role("button", name="Generate")).to_be_visible()
    browser.settle()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value(PROMPT)
    expect(page.get_by_label("Seed", exact=True)).to_have_value(str(SEED))
    expect(page.get_by_label("Width", exact=True)).to_have_value("512")
    expect(page.get_by_label("Height", exact=True)).to_have_value("512")
    expect(page.get_by_role("slider", name="Steps")).to_have_value("2")
    expect(page.get_by_label("Randomize seed", exact=True)).not_to_be_checked()


def test_hardware_page_shows_the_device(browser, generated):
    """The Hardware page opens from the sidebar and names the device the model runs on."""
    browser.nav("Hardware")
    browser.assert_no_exception()
    browser.shoot("hardware")
    main = browser.main_text()
    assert main.startswith("Hardware"), main
    assert re.search(r"\bcpu\b", main, re.IGNORECASE), main


def test_ctrl_enter_shows_a_live_preview_then_the_result_in_the_first_viewport(browser, generated):
    """At 1400×1000, Ctrl+Enter in the prompt starts a 1024², 40-step image: a preview image
    with its step count shows while it runs, then the result, beside the form, unscrolled."""
    from playwright.sync_api import expect

    page = browser.page
    page.set_viewport_size({"width": 1400, "height": 1000})
    seed = 4321
    # A shared link fills the form (a new session, the same loaded model).
    page.goto(
        f"{browser.server.url}/?prompt=preview+check&seed={seed}&width=1024&height=1024&steps=40"
    )
    page.get_by_role("button", name="Generate").wait_for()
    browser.settle()
    expect(page.get_by_role("switch", name="Live preview")).to_be_checked()
    prompt = page.get_by_label("Prompt", exact=True)
    expect(prompt).to_have_value("preview check")
    prompt.focus()
    prompt.press("Control+Enter")

    preview_caption = page.get_by_text(re.compile(r"^Preview · step \d+/40$"))
    expect(preview_caption).to_be_visible(timeout=TIMEOUT_MS)
    final_caption = page.get_by_text(f"Seed {seed}", exact=True)
    assert final_caption.count() == 0  # the preview came before the result
    preview = page.locator("[data-testid=stImage]", has=preview_caption).locator("img")
    expect(preview).to_be_visible()
    assert preview.evaluate("img => img.naturalWidth") == 128  # latent size, shown upscaled
    assert preview.bounding_box()["width"] > 300
    browser.shoot("generate-preview", width=1400)

    result = page.locator("[data-testid=stImage]", has=final_caption).locator("img")
    # 40 steps at 1024²: ~10 s on a quiet 2-core machine, minutes on a busy one.
    expect(result).to_be_visible(timeout=4 * TIMEOUT_MS)
    browser.settle()
    browser.assert_no_exception()
    expect(preview_caption).to_have_count(0)
    box = result.bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= 1000, box  # no scrolling needed
    generate = page.get_by_role("button", name="Generate").bounding_box()
    assert box["x"] > generate["x"] + generate["width"], (box, generate)  # beside the form
    assert result.evaluate("img => img.naturalWidth") == 1024
    browser.shoot("generate", width=1400)
    page.set_viewport_size({"width": 1280, "height": 1000})


@pytest.fixture(name="restarted", scope="module")
def fixture_restarted(browser, generated) -> Browser:
    """Stop the server after the generation, start it again on the same data, open the app."""
    browser.server.stop()
    browser.server.start()
    browser.open()
    return browser


def test_restart_serves_the_app_again(restarted):
    """After a stop and start on the same data, the generator page is served, model unloaded."""
    restarted.assert_no_exception()
    assert "Status: not loaded" in restarted.page.get_by_test_id("stSidebar").inner_text()


def test_gallery_keeps_the_entry_after_restart(restarted):
    """The gallery still lists the generation after the server restarted."""
    _open_gallery(restarted)
    main = restarted.main_text()
    assert str(SEED) in main
    assert PROMPT[:20] in main
