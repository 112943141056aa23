"""The pages during and after a load: reasons in plain sight, progress, estimates, sidebar."""

import os
import time

import pytest

from core.service import get_backend
from testkit.child import run_child
from testkit.hub_standin import REPO_ID, HubStandIn
from tests.conftest import fill_small


def no_collapsed_box(at) -> bool:
    """Nothing on the page hides behind a click (st.status / st.expander)."""
    return not at.get("expandable")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SD_MODEL": "/nowhere/sd35"}, "does not exist"),
        ({"SD_DEVICE": "cuda"}, "SD_DEVICE=cuda but this machine has no CUDA device"),
        ({"SD_OFFLOAD": "model"}, "SD_OFFLOAD=model moves weights between RAM and a CUDA GPU"),
    ],
    ids=["missing folder", "cuda without CUDA", "offload without a GPU"],
)
def test_load_failure_reason_is_visible_without_a_click(app, monkeypatch, env, expected):
    """The reason and its fix are an error on the page, also after the next rerun."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if "SD_DEVICE" in env:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    at = fill_small(app())
    at.button(key="generate").click().run()
    assert not at.exception
    assert any(expected in e.value for e in at.error), [e.value for e in at.error]
    assert no_collapsed_box(at)
    at.run()  # another rerun, no click: the reason stays
    assert any(expected in e.value for e in at.error)


def test_hub_id_offline_reason_is_visible(app, monkeypatch, tmp_path):
    """HF_HUB_OFFLINE with an empty cache: the error offers the demo model, in plain sight."""
    from huggingface_hub import constants

    monkeypatch.setenv("SD_MODEL", REPO_ID)
    monkeypatch.setenv("SD_DTYPE", "float32")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    at = fill_small(app())
    at.button(key="generate").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("cannot be reached" in e and "SD_MODEL=demo" in e for e in errors), errors
    assert no_collapsed_box(at)


def test_estimate_and_draft_preset_before_the_click(app, monkeypatch):
    """SD3.5 on a CPU: ≈ 35 min for the defaults, and one click sets the draft preset."""
    monkeypatch.setenv("SD_MODEL", REPO_ID)
    monkeypatch.setenv("SD_DEVICE", "cpu")
    at = app()
    assert any("≈ 35 min at 1024², 40 steps on this CPU" in i.value for i in at.info)
    at.button(key="draft_preset").click().run()
    assert (at.number_input(key="width").value, at.number_input(key="height").value) == (512, 512)
    assert at.slider(key="steps").value == 20
    assert not any("1024²" in i.value for i in at.info)
    assert any("at 512², 20 steps" in c.value for c in at.caption)
    assert get_backend().state == "not loaded"  # the estimate loads nothing


def test_the_draft_preset_never_raises_the_steps_of_a_family(app, monkeypatch):
    """Large Turbo (4 steps by default): its draft is 512² and keeps the 4 steps, where a
    fixed 20-step draft would have made the "quick look" five times slower."""
    monkeypatch.setenv("SD_MODEL", REPO_ID)
    monkeypatch.setenv("SD_MODEL_FAMILY", "sd35-large-turbo")
    monkeypatch.setenv("SD_DEVICE", "cpu")
    at = app()
    assert at.slider(key="steps").value == 4
    draft = at.button(key="draft_preset")
    assert draft.label == "Draft: 512², 4 steps"
    draft.click().run()
    assert (at.number_input(key="width").value, at.number_input(key="height").value) == (512, 512)
    assert at.slider(key="steps").value == 4


# The AppTest runs in a subprocess: huggingface_hub reads HF_ENDPOINT at import.
WATCH_DOWNLOAD = """
import json, time
from streamlit.testing.v1 import AppTest
from core.service import get_backend

at = AppTest.from_file("streamlit_app.py", default_timeout=60)
at.run()
backend = get_backend()
future = backend.load_async()  # as a click in another session would
while backend.load_status.done_bytes == 0 and not future.done():
    time.sleep(0.05)
# A reload while the download runs: a new session (AppTest drops the sidebar of
# st.navigation apps on reruns, so a fresh AppTest is also what shows it).
at = AppTest.from_file("streamlit_app.py", default_timeout=60)
at.run()
out = {
    "progress": [p.proto.text for p in at.get("progress")],
    "sidebar": [c.value for c in at.sidebar.caption],
    "cancel": [(b.label, b.help) for b in at.button if b.key.startswith("cancel_")],
}
next(b for b in at.button if b.key.startswith("cancel_")).click().run()
try:
    future.result(timeout=120)
except Exception as exc:
    out["load_error"] = str(exc)
at.run()
out["errors"] = [e.value for e in at.error]
out["infos"] = [i.value for i in at.info]
out["cancel_after"] = [b.label for b in at.button if b.key.startswith("cancel_")]
print("RESULT" + json.dumps(out))
"""


def test_download_progress_reaches_the_page_and_cancel_works(demo_dir, tmp_path):
    """A reload during the download shows bytes and a Cancel that leaves no partial file."""
    hub = HubStandIn(demo_dir, bytes_per_second=200_000).start()
    environ = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "SD_MODEL": REPO_ID,
        "SD_DEVICE": "cpu",
        "SD_DTYPE": "float32",
    }
    environ.pop("HF_HUB_OFFLINE", None)
    started = time.monotonic()
    try:
        out = run_child(WATCH_DOWNLOAD, env=environ, timeout=300)
    finally:
        hub.stop()
    (progress,) = out["progress"]
    assert progress.startswith("Downloading: ") and " of 1.8 MB" in progress
    assert any("Status: loading · Downloading: " in c for c in out["sidebar"])
    ((label, help_text),) = out["cancel"]
    assert label == "Cancel download" and help_text.startswith("Stops downloading the model.")
    assert "download was cancelled" in out["load_error"]
    # Not a failure: what was kept and what Generate does next, and no Cancel left behind.
    assert not out["errors"]
    assert any("download was cancelled" in i and "continues" in i for i in out["infos"])
    assert out["cancel_after"] == []
    assert not list((tmp_path / "hf").rglob("*.incomplete"))
    assert time.monotonic() - started < 120


def cancel_buttons(at) -> list[str]:
    return [b.label for b in at.button if "cancel" in (b.key or "") or "Cancel" in b.label]


def test_no_cancel_button_with_the_demo_model_nor_after_a_load(app):
    """The demo model downloads nothing: no Cancel while it loads or generates, nor after."""
    at = fill_small(app())
    assert cancel_buttons(at) == []
    at.button(key="generate").click().run()
    assert not at.exception and not at.error
    assert get_backend().state == "loaded"
    assert at.get("imgs") or at.image, "the image is shown"
    assert cancel_buttons(at) == []
    at.run()  # a rerun after the load: still none
    assert cancel_buttons(at) == []
    at.switch_page("pages/hardware.py").run()
    assert cancel_buttons(at) == []


def test_cancel_stops_only_a_download_or_read_in(demo_dir):
    """A load that downloads nothing offers no Cancel at any step and cancel_load() stops
    nothing (a generation never: it is no load); after the load neither."""
    from core.generation import GenerationRequest
    from core.local import LocalBackend

    backend = LocalBackend(model=str(demo_dir), device="cpu", dtype="float32")
    future = backend.load_async()
    seen = []
    while not future.done():
        progress = backend.load_progress()
        seen.append((progress.phase, progress.cancellable))
        if not progress.cancellable:
            assert backend.cancel_load() is False
        time.sleep(0.005)
    future.result()
    assert all(cancellable == (phase == "reading") for phase, cancellable in seen), seen
    assert backend.load_progress().cancellable is False and backend.cancel_load() is False
    steps = []

    def step(progress):
        steps.append(progress)
        if len(steps) == 1:
            assert backend.cancel_load() is False  # Cancel during a generation: nothing

    result = backend.generate(
        GenerationRequest(prompt="a fox", seed=3, width=512, height=512, num_inference_steps=2),
        on_progress=step,
    )
    assert result.images and len(steps) >= 2
