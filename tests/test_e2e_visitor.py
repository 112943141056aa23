"""A visitor from another machine, for real: the app listens on a non-loopback address of
this machine and Chromium connects to it there, so Streamlit reports a non-loopback peer.
Under the default SD_SHOW_PATHS=auto that visitor reads folder names, never server paths.
Skipped (never passed) where the machine has no non-loopback address or no chromium.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from tests.test_e2e_browser import BROWSER_MARKS, StreamlitServer, new_tab

pytestmark = BROWSER_MARKS


def outward_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.123", 9))
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if ipaddress.ip_address(address).is_loopback else address


def test_non_loopback_visitor_sees_no_server_paths(chromium, tmp_path):
    """SD_MODEL names a folder that does not exist, SD_SHOW_PATHS is left at auto: the page,
    its sidebar and the load error name "the model folder", never the path."""
    from playwright.sync_api import expect

    address = outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to listen on")
    secret = tmp_path / "srv-secret-models" / "sd35"
    server = StreamlitServer(data_dir=tmp_path / "data", log_path=tmp_path / "streamlit.log")
    server.host = address
    server.extra_env = {"SD_MODEL": str(secret)}
    server.start()
    try:
        with new_tab(chromium, server, tmp_path) as tab:
            tab.open()
            tab.nav("Hardware")
            tab.assert_no_exception()
            tab.page.get_by_role("button", name="Load model now").click()
            tab.settle()
            error = tab.page.get_by_test_id("stMain").get_by_test_id("stAlertContentError")
            expect(error.filter(has_text="does not exist").first).to_be_visible()
            page_text = tab.page.inner_text("body")
            assert "<the model folder>" in page_text, page_text
            assert "srv-secret-models" not in page_text and str(tmp_path) not in page_text
    finally:
        server.stop()
    assert "srv-secret-models" in server.log_path.read_text()  # the log keeps the full text
