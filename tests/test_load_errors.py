"""Load failures become messages with the remedy, through the real diffusers/hub code.

The Hub is replaced by a loopback server answering as the Hub does (status codes and
X-Error-Code headers); huggingface_hub reads HF_ENDPOINT at import, so each scenario
runs the real loader in a fresh subprocess.
"""

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.local import LocalBackend
from tests.conftest import run_script

LOAD_ALL = """
import json, sys
from core.generation import GenerationError
from core.local import load_pipeline
out = {}
for model, token in json.loads(sys.argv[1]):
    try:
        load_pipeline(model=model, device="cpu", dtype="float32", token=token)
        out[model + str(token)] = "loaded"
    except GenerationError as exc:
        out[model + str(token)] = str(exc)
print("RESULT" + json.dumps(out))
"""


class FakeHub(BaseHTTPRequestHandler):
    """Answer like the Hub for a gated repo, a hidden repo, a bad token, a dead link."""

    def _answer(self) -> None:
        if "dead-link" in self.path:
            self.close_connection = True  # hang up without a response
            return
        if "gated" in self.path:
            self.send_response(403)
            self.send_header("X-Error-Code", "GatedRepo")
        elif self.headers.get("authorization") == "Bearer hf_revoked":
            self.send_response(401)
            self.send_header("X-Error-Message", "Invalid credentials in Authorization header")
        else:
            self.send_response(401)
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_HEAD = _answer  # noqa: N815 - http.server dispatches on these names

    def log_message(self, *args) -> None:
        pass


def load_in_subprocess(cases, tmp_path, **env) -> dict[str, str]:
    return run_script(LOAD_ALL, cases, {**os.environ, "HF_HOME": str(tmp_path / "hf"), **env})


@pytest.fixture(name="fake_hub", scope="module")
def fixture_fake_hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_hub_refusals_explain_the_fix(fake_hub, tmp_path):
    """Gated, no token, revoked token and a dead connection each get their own remedy."""
    cases = [
        ["org/gated-model", "hf_valid"],
        ["org/sd-model", None],
        ["org/sd-model", "hf_revoked"],
        ["org/dead-link-model", None],
    ]
    out = load_in_subprocess(cases, tmp_path, HF_ENDPOINT=fake_hub)
    assert "accept the licence" in out["org/gated-modelhf_valid"]
    assert "without a token" in out["org/sd-modelNone"]
    assert "HF_TOKEN" in out["org/sd-modelNone"]
    assert "invalid or expired" in out["org/sd-modelhf_revoked"]
    assert "could not be reached" in out["org/dead-link-modelNone"]
    assert "SD_MODEL=demo" in out["org/dead-link-modelNone"]
    assert not any("hf_valid" in m or "hf_revoked" in m for m in out.values())


def test_offline_mode_explains_the_fix(tmp_path):
    """With HF_HUB_OFFLINE=1 and an empty cache, the message offers the demo model."""
    out = load_in_subprocess(
        [["stabilityai/stable-diffusion-3.5-medium", None]], tmp_path, HF_HUB_OFFLINE="1"
    )
    (message,) = out.values()
    assert "cannot be reached" in message
    assert "SD_MODEL=demo" in message


def test_missing_local_folder_is_named(tmp_path):
    """A local path that does not exist is reported as such."""
    backend = LocalBackend(model=str(tmp_path / "nowhere"), dtype="float32")
    with pytest.raises(Exception, match="does not exist"):
        backend.ensure_loaded()


def test_folder_without_model_index_is_not_a_pipeline(tmp_path):
    """A folder without model_index.json is reported as not a diffusers pipeline."""
    (tmp_path / "weights.bin").write_bytes(b"x")
    backend = LocalBackend(model=str(tmp_path), dtype="float32")
    with pytest.raises(Exception, match="not a diffusers pipeline"):
        backend.ensure_loaded()
