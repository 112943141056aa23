"""Sign-in end to end: `streamlit run` with an `[auth]` secret, a real OpenID Connect provider
(npm `oidc-provider`, pinned in tests/oidc/package-lock.json) on loopback, and headless Debian
Chromium with one browser context per person.

The app reads a secrets file written into the test's temporary folder (`--secrets.files`), so a
developer's own `.streamlit/secrets.toml` is neither read nor touched. One host name, 127.0.0.1,
for the app, the redirect URI, the provider and the browser. `.ci/run` installs the provider
(`npm ci` in tests/oidc); without node, the provider's packages or chromium the tests are
skipped, never passed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.common import free_port
from tests.conftest import APP_ROOT
from tests.test_e2e_browser import (
    BROWSER_MARKS,
    TIMEOUT_MS,
    Browser,
    StreamlitServer,
    _screenshot_dir,
)

NODE = shutil.which("node")
OIDC_DIR = APP_ROOT / "tests" / "oidc"
pytestmark = [
    *BROWSER_MARKS,
    pytest.mark.skipif(NODE is None, reason="node not installed (the OIDC provider needs it)"),
    pytest.mark.skipif(
        not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir(),
        reason="the OIDC provider is not installed: run `npm ci` in tests/oidc (.ci/run does)",
    ),
]

ALICE, BOB, ADMIN, OUTSIDER = (
    "alice@example.com",
    "bob@example.com",
    "admin@example.com",
    "eve@elsewhere.org",
)


class OidcProvider:
    """tests/oidc/provider.js on a loopback port; it exits when its stdin closes."""

    def __init__(self, *, port: int, redirect_uri: str, log_path: Path) -> None:
        self.port = port
        self.issuer = f"http://127.0.0.1:{port}"
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            [NODE, "provider.js", str(port), redirect_uri],
            cwd=OIDC_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.proc.stdout.readline()  # "ready ISSUER", or "" if it died
        if not line.startswith("ready"):
            self.stop()
            raise RuntimeError(f"the OIDC provider did not start: {log_path.read_text()}")

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _secrets(path: Path, *, app_port: int, issuer: str) -> Path:
    path.write_text(
        "[auth]\n"
        f'redirect_uri = "http://127.0.0.1:{app_port}/oauth2callback"\n'
        'cookie_secret = "a-long-random-string-for-the-test-only"\n'
        'client_id = "sd35-dashboard"\n'
        'client_secret = "test-secret-not-for-production"\n'
        f'server_metadata_url = "{issuer}/.well-known/openid-configuration"\n'
        # Streamlit asks for prompt=select_account, which this provider refuses.
        'client_kwargs = { prompt = "login" }\n'
    )
    return path


@pytest.fixture(name="signin_server", scope="module")
def fixture_signin_server(tmp_path_factory):
    """The app with sign-in on (allowed: @example.com; admin: ADMIN) and its OIDC provider."""
    root = tmp_path_factory.mktemp("e2e-signin")
    app_port = free_port()
    provider = OidcProvider(
        port=free_port(),
        redirect_uri=f"http://127.0.0.1:{app_port}/oauth2callback",
        log_path=root / "oidc.log",
    )
    server = StreamlitServer(data_dir=root / "data", log_path=root / "streamlit.log")
    server.port = app_port
    secrets = _secrets(root / "secrets.toml", app_port=app_port, issuer=provider.issuer)
    server.extra_args = ["--secrets.files", str(secrets)]
    server.extra_env = {"SD_ALLOWED_USERS": "@example.com", "SD_ADMINS": ADMIN}
    try:
        server.start()
        yield server
    finally:
        server.stop()
        provider.stop()


@pytest.fixture(name="people", scope="module")
def fixture_people(chromium, signin_server, tmp_path_factory):
    """One context (own cookies) per person on the shared Chromium, opened lazily, closed at
    the end."""
    shots = _screenshot_dir(tmp_path_factory)  # $E2E_SCREENSHOTS, as in test_e2e_browser
    tabs: dict[str, Browser] = {}

    def tab(email: str) -> Browser:
        if email not in tabs:
            context = chromium.new_context(viewport={"width": 1280, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            tabs[email] = Browser(page=page, server=signin_server, shots=shots)
        return tabs[email]

    yield tab
    for browser in tabs.values():
        browser.page.context.close()


def sign_in(tab: Browser, email: str) -> None:
    """Open the app, click Log in, sign in on the provider's form, land back in the app."""
    from playwright.sync_api import expect

    page = tab.page
    page.goto(tab.server.url)
    page.get_by_role("button", name="Log in").click()
    # The provider's development login form: any login and password are accepted.
    page.locator("input[name=login]").fill(email)
    page.locator("input[name=password]").fill("any password")
    page.locator("button[type=submit]").click()
    consent = page.locator("button[type=submit]", has_text="Continue")
    if consent.count():
        consent.click()
    expect(page).to_have_url(f"{tab.server.url}/", timeout=TIMEOUT_MS)
    expect(page.get_by_test_id("stSidebar").get_by_text(email)).to_be_visible()
    tab.settle()


def test_signed_out_visitor_sees_only_log_in(people):
    """Before sign-in the app shows a Log in button and nothing of the generator or sidebar."""
    from playwright.sync_api import expect

    tab = people("anonymous")
    tab.page.goto(tab.server.url)
    expect(tab.page.get_by_role("button", name="Log in")).to_be_visible()
    tab.settle()
    tab.assert_no_exception()
    tab.shoot("signin-gate")
    expect(tab.page.get_by_role("button", name="Generate")).to_have_count(0)
    expect(tab.page.get_by_test_id("stSidebarNav")).to_have_count(0)
    assert "Status:" not in tab.page.inner_text("body")
    for path in ("/gallery", "/hardware"):
        tab.page.goto(tab.server.url + path)
        expect(tab.page.get_by_role("button", name="Log in")).to_be_visible()
        tab.settle()
        assert "Seed history" not in tab.main_text() and "CPU" not in tab.main_text()


def test_outsider_is_told_plainly_and_gets_nothing(people):
    """A real sign-in with an email outside SD_ALLOWED_USERS: named, refused, Log out offered."""
    from playwright.sync_api import expect

    tab = people(OUTSIDER)
    page = tab.page
    page.goto(tab.server.url)
    page.get_by_role("button", name="Log in").click()
    page.locator("input[name=login]").fill(OUTSIDER)
    page.locator("input[name=password]").fill("any password")
    page.locator("button[type=submit]").click()
    consent = page.locator("button[type=submit]", has_text="Continue")
    if consent.count():
        consent.click()
    expect(page.get_by_text("not on the app's list of allowed users")).to_be_visible()
    expect(page.get_by_test_id("stMain").get_by_text(OUTSIDER)).to_be_visible()
    tab.settle()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    expect(page.get_by_role("button", name="Generate")).to_have_count(0)


def test_alice_signs_in_and_generates(people):
    """Alice signs in through the provider, sees her email in the sidebar, and generates."""
    from tests.test_e2e_browser import _click_generate, _fill_small

    tab = people(ALICE)
    sign_in(tab, ALICE)
    tab.assert_no_exception()
    _fill_small(tab)
    _click_generate(tab)
    assert "Seed 1234 · 512×512 · 2 steps" in tab.main_text()
    tab.shoot("signin-generate", height=1400)


def _gallery_card(tab: Browser):
    """Open the Seed history and return the locator of the one image's "by …" line."""
    from playwright.sync_api import expect

    tab.nav("Seed history")
    tab.assert_no_exception()
    card = tab.page.get_by_test_id("stMain").get_by_text(f"by {ALICE}")
    expect(card).to_be_visible(timeout=TIMEOUT_MS)
    return card


def test_bob_sees_alices_image_under_everyone_but_cannot_delete_it(people):
    """Bob (another browser, another account) sees Alice's image and who made it; its
    Details offer no Delete; under Mine it is not there."""
    from playwright.sync_api import expect

    tab = people(BOB)
    sign_in(tab, BOB)
    _gallery_card(tab)
    page = tab.page
    page.get_by_role("button", name="Details").first.click()
    tab.settle()
    expect(page.get_by_role("button", name="Use these settings")).to_be_visible()
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    tab.shoot("signin-other-user-details", height=1400)
    page.get_by_role("button", name="Close").click()
    tab.settle()
    page.get_by_role("radio", name="Mine", exact=True).first.click()
    tab.settle()
    expect(page.get_by_test_id("stMain").get_by_text("0 images")).to_be_visible()
    expect(page.get_by_text(f"by {ALICE}")).to_have_count(0)


def test_alice_deletes_her_image(people):
    """Alice, the owner, is offered Delete; after confirming, Bob no longer sees it."""
    from playwright.sync_api import expect

    tab = people(ALICE)
    _gallery_card(tab)
    page = tab.page
    page.get_by_role("button", name="Details").first.click()
    tab.settle()
    page.get_by_role("button", name="Delete").click()
    tab.settle()
    page.get_by_role("button", name="Yes, delete").click()
    tab.settle()
    tab.assert_no_exception()
    expect(page.get_by_text(f"by {ALICE}")).to_have_count(0)
    bob = people(BOB)
    bob.page.reload()
    bob.settle()
    expect(bob.page.get_by_text(f"by {ALICE}")).to_have_count(0)


def test_admin_restores_the_deleted_image(people):
    """The admin sees the delete in the audit trail and under Deleted images, and Restore
    brings Alice's image back for everyone."""
    from playwright.sync_api import expect

    tab = people(ADMIN)
    sign_in(tab, ADMIN)
    tab.nav("Seed history")
    page = tab.page
    page.get_by_text("Deleted images (1)").click()
    tab.settle()
    deleted = page.get_by_test_id("stMain").get_by_text(f"deleted by {ALICE}")
    expect(deleted).to_be_visible()
    tab.shoot("signin-admin-deleted", height=1400)
    page.get_by_role("button", name="Restore").click()
    tab.settle()
    tab.assert_no_exception()
    expect(page.get_by_text(f"by {ALICE}").first).to_be_visible(timeout=TIMEOUT_MS)
    bob = people(BOB)
    bob.page.reload()
    bob.settle()
    bob.page.get_by_role("radio", name="Everyone", exact=True).first.click()
    bob.settle()
    expect(bob.page.get_by_text(f"by {ALICE}")).to_be_visible(timeout=TIMEOUT_MS)


def test_log_out_returns_to_the_sign_in_screen(people):
    """Log out in the sidebar ends the session: the Log in screen is back."""
    from playwright.sync_api import expect

    tab = people(ALICE)
    tab.page.get_by_test_id("stSidebar").get_by_role("button", name="Log out").click()
    # st.logout also ends the provider's session; this provider asks to confirm that.
    tab.page.get_by_role("button", name="Yes, sign me out").click()
    expect(tab.page.get_by_role("button", name="Log in")).to_be_visible(timeout=TIMEOUT_MS)
    tab.page.goto(tab.server.url)
    expect(tab.page.get_by_role("button", name="Log in")).to_be_visible(timeout=TIMEOUT_MS)
    expect(tab.page.get_by_role("button", name="Generate")).to_have_count(0)
