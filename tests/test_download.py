"""The first download, through the real huggingface_hub and diffusers code, from a Hub stand-in.

huggingface_hub reads HF_ENDPOINT and HF_HOME at import, so each load runs in a fresh
subprocess pointed at the loopback stand-in (testkit/hub_standin.py), which serves the saved
tiny pipeline under SD3.5 Medium's repo id with throttled bodies.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest

from core import download
from core.units import human_bytes
from testkit.child import reported
from testkit.hub_standin import REPO_ID, HubStandIn
from tests.conftest import APP_ROOT, run_script

LOAD = """
import hashlib, json, sys, threading, time
from core.units import human_bytes
from core.generation import GenerationError, GenerationRequest
from core.local import load_pipeline, run_pipeline
from core.download import LoadStatus
from core.memory import MemoryOptions
import core.download

args = json.loads(sys.argv[1])
if args.get("disk_free") is not None:
    Usage = type(core.download.shutil.disk_usage("/"))
    core.download.shutil.disk_usage = lambda path: Usage(10**12, 10**12, args["disk_free"])
status = LoadStatus()
texts, done = [], threading.Event()

def watch():
    while not done.is_set():
        if status.text():
            texts.append(status.text())
        if args.get("cancel") and status.done_bytes > 0:
            status.cancel()
        time.sleep(0.02)

threading.Thread(target=watch, daemon=True).start()
out = {}
try:
    loaded = load_pipeline(
        model=args["model"], device="cpu", dtype="float32", status=status,
        memory=MemoryOptions(**args.get("memory", {})),
    )
    (image,), _ = run_pipeline(
        loaded.pipe, GenerationRequest(prompt="a fox", seed=5, width=512, height=512,
                                       num_inference_steps=2)
    )
    out["pixels"] = hashlib.sha256(image.tobytes()).hexdigest()
    out["t5"] = loaded.pipe.text_encoder_3 is not None
except GenerationError as exc:
    out["error"] = str(exc)
done.set()
for thread in threading.enumerate():  # a cancelled download ends at its next bytes (the app
    if thread.name == "sd-download":  # lives on; this script waits before it exits)
        thread.join(timeout=60)
out["texts"] = sorted(set(texts))
out["done_bytes"], out["total_bytes"] = status.done_bytes, status.total_bytes
out["phases"] = status.phases
out["bytes_by_phase"] = status.bytes_by_phase
print("RESULT" + json.dumps(out))
"""


def run_load(hub, hf_home, *, offline: bool = False, **args) -> dict:
    environ = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home)}
    environ.pop("HF_HUB_OFFLINE", None)
    if offline:
        environ["HF_HUB_OFFLINE"] = "1"
    args.setdefault("model", REPO_ID)
    return run_script(LOAD, args, environ)


def partials(hf_home: Path) -> list[Path]:
    return sorted(hf_home.rglob("*.incomplete"))


@pytest.fixture(name="hub")
def fixture_hub(demo_dir):
    server = HubStandIn(demo_dir, bytes_per_second=2_000_000).start()
    yield server
    server.stop()


@pytest.fixture(name="local_pixels", scope="module")
def fixture_local_pixels(demo_dir, tmp_path_factory):
    """The image the same folder gives when loaded from disk (no Hub involved)."""
    hf_home = tmp_path_factory.mktemp("hf-local")
    server = HubStandIn(demo_dir).start()  # unused: a local folder never asks the Hub
    try:
        return run_load(server, hf_home, model=str(demo_dir))["pixels"]
    finally:
        server.stop()


def test_download_shows_bytes_then_loads_the_same_pipeline(hub, tmp_path, local_pixels):
    """Progress reads "<done> of <total>" in bytes; the image equals the local folder's."""
    out = run_load(hub, tmp_path / "hf")
    assert "error" not in out, out
    assert out["pixels"] == local_pixels
    downloading = [t for t in out["texts"] if t.startswith("Downloading: ")]
    assert downloading and all(" of " in t for t in downloading)
    assert out["phases"] == ["starting", "checking", "downloading", "reading", "building"]
    weights = sum(p.stat().st_size for n, p in hub.files.items() if n.endswith(".safetensors"))
    assert out["bytes_by_phase"]["reading"] == [weights, weights]  # every weight read in
    done, total = out["bytes_by_phase"]["downloading"]
    assert 0 < done <= total  # identical small files share one blob: fetched once
    assert all(f" of {human_bytes(total)}" in t for t in downloading)
    assert not partials(tmp_path / "hf")
    fetched = len(hub.file_gets())
    again = run_load(hub, tmp_path / "hf")  # the next start finds the cache complete
    assert again["pixels"] == local_pixels
    assert again["phases"] == ["starting", "checking", "reading", "building"]
    assert not [f for f in hub.file_gets()[fetched:] if f.endswith(".safetensors")]
    asked = len(hub.requests)
    offline = run_load(hub, tmp_path / "hf", offline=True)  # HF_HUB_OFFLINE with the cache
    assert offline["pixels"] == local_pixels
    assert "reading" in offline["phases"] and len(hub.requests) == asked


def test_drop_t5_downloads_nothing_of_t5(hub, tmp_path):
    """SD_DROP_T5: no request at all under text_encoder_3/ or tokenizer_3/."""
    out = run_load(hub, tmp_path / "hf", memory={"memory": "manual", "drop_t5": True})
    assert "error" not in out, out
    assert out["t5"] is False
    asked = [path for _, path, _ in hub.requests if "/resolve/" in path]
    assert asked and not [p for p in asked if "text_encoder_3/" in p or "tokenizer_3/" in p]
    assert any("text_encoder_2/" in p for p in asked)


def test_small_disk_is_refused_before_any_weight_byte(hub, tmp_path):
    """Too little room: the message names the need, the cache and HF_HOME; no weights fetched."""
    out = run_load(hub, tmp_path / "hf", disk_free=100_000)
    assert "Not enough disk space" in out["error"]
    assert str(tmp_path / "hf") in out["error"] and "HF_HOME=" in out["error"]
    assert "only 100 kB is free" in out["error"]
    assert not [f for f in hub.file_gets() if f.endswith(".safetensors")]
    assert hub.body_bytes < 2_000  # model_index.json only, for diffusers' own file selection


def test_cancel_leaves_no_partial_file(demo_dir, tmp_path):
    """Cancel mid-download: the load fails saying so, and no *.incomplete stays behind."""
    server = HubStandIn(demo_dir, bytes_per_second=300_000).start()
    try:
        out = run_load(server, tmp_path / "hf", cancel=True)
    finally:
        server.stop()
    assert "download was cancelled" in out["error"]
    assert not partials(tmp_path / "hf")
    weights = list((tmp_path / "hf").rglob("transformer/*.safetensors"))
    assert not weights  # the big file never finished


CANCEL_STALLED = """
import hashlib, json, sys, time
from core.generation import GenerationRequest, LoadCancelled
from core.local import LocalBackend

backend = LocalBackend(model=sys.argv[1], device="cpu", dtype="float32")
first = backend.load_async()
while backend.load_progress().phase != "downloading" or backend.load_status.done_bytes == 0:
    if first.done():
        first.result()  # failed before the download: the traceback says why
    time.sleep(0.02)
out = {"cancellable": backend.load_progress().cancellable, "cancel": backend.cancel_load()}
out["ack"] = backend.load_progress().phase
second = backend.load_async()  # Generate clicked again at once
out["joined"] = second is first
try:
    first.result(timeout=60)  # the stand-in still holds every body back
except LoadCancelled as exc:
    out["first"] = str(exc)
except TimeoutError:
    out["first"] = "still running"
print("CANCELLED" + json.dumps(out), flush=True)
sys.stdin.readline()  # the stand-in answers again
second.result(timeout=120)
image = backend.generate(
    GenerationRequest(prompt="a fox", seed=5, width=512, height=512, num_inference_steps=2)
).images[0]
out["pixels"] = hashlib.sha256(image.tobytes()).hexdigest()
out["progress"] = [backend.state, backend.load_progress().phase, backend.cancel_load()]
print("RESULT" + json.dumps(out), flush=True)
"""


def test_cancel_on_a_stalled_download_ends_at_once_and_the_next_load_starts_afresh(
    demo_dir, tmp_path, local_pixels
):
    """Cancel while the Hub holds every body back: the load ends anyway ("Cancelling…" at
    once, then cancelled), a Generate right after is not handed the cancelled load but starts
    a new one, which finishes from the files kept once the Hub answers again."""
    hub = HubStandIn(demo_dir, stall=True).start()
    environ = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
    environ.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", CANCEL_STALLED, REPO_ID],
        cwd=APP_ROOT,
        env=environ,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("CANCELLED"), line
        cancelled = json.loads(line[len("CANCELLED") :])
        # Files that finished before the cancel: in the snapshot folder now.
        kept = {
            path.relative_to(snapshot).as_posix()
            for snapshot in (tmp_path / "hf").glob("hub/models--*/snapshots/*")
            for path in snapshot.rglob("*")
            if path.is_file()
        }
        hub.release()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
        hub.stop()
    assert cancelled["cancellable"] and cancelled["cancel"]
    assert cancelled["ack"] == "cancelling"
    assert not cancelled["joined"]
    assert cancelled["first"].startswith("The download was cancelled. Files that finished")
    result = reported(out)
    assert result is not None, out[-3000:]
    assert result["pixels"] == local_pixels
    assert result["progress"] == ["loaded", "", False]  # nothing left to cancel
    assert not partials(tmp_path / "hf")
    gets = hub.file_gets()
    again = {name for name in gets if gets.count(name) > 1}
    assert kept and again, gets  # some files were kept, the stalled ones fetched again
    assert not kept & again, gets  # and what was kept was not fetched again


def test_restart_after_a_killed_download_leaves_no_orphan(demo_dir, tmp_path):
    """A killed process leaves *.incomplete; the next one removes it and finishes the job."""
    hf_home = tmp_path / "hf"
    server = HubStandIn(demo_dir, bytes_per_second=50_000).start()
    environ = {**os.environ, "HF_ENDPOINT": server.url, "HF_HOME": str(hf_home)}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", LOAD, json.dumps({"model": REPO_ID})],
            cwd=APP_ROOT,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not partials(hf_home) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        orphans = partials(hf_home)
        assert orphans  # what huggingface_hub leaves and never removes by itself
        server.bytes_per_second = None
        out = run_load(server, hf_home)
    finally:
        server.stop()
    assert "error" not in out, out
    assert not partials(hf_home)


def test_dropped_connection_mid_file_still_completes(demo_dir, tmp_path, local_pixels):
    """The stand-in hangs up mid-file once per file; the download retries and the image matches."""
    server = HubStandIn(demo_dir, drop_after=40_000).start()
    try:
        out = run_load(server, tmp_path / "hf")
    finally:
        server.stop()
    assert "error" not in out, out
    assert out["pixels"] == local_pixels


def test_check_disk_names_need_place_and_hf_home(monkeypatch, tmp_path):
    """The disk check alone: refused with sizes, the cache folder and HF_HOME."""
    plan = download.DownloadPlan(
        repo_id=REPO_ID,
        allow_patterns=(),
        ignore_patterns=(),
        files=(("transformer/x.safetensors", 4_940_000_000, False), ("a.json", 10, True)),
        cache_dir=str(tmp_path / "hub"),
    )
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda _: usage(0, 0, 3_000_000_000))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(download.DownloadError) as info:
        download.check_disk(plan)
    message = str(info.value)
    assert "needs 5.1 GB" in message and "only 3.0 GB is free" in message
    assert str(tmp_path / "hub") in message and f"HF_HOME={tmp_path}" in message
    monkeypatch.setattr(download.shutil, "disk_usage", lambda _: usage(0, 0, 6_000_000_000))
    download.check_disk(plan)  # enough room: no error


def test_progress_text_has_units_speed_and_time_left():
    """ "1.2 GB of 16.3 GB · 38 MB/s · 7 min left" from the byte counts."""
    status = download.LoadStatus()
    status.start("downloading", total_bytes=16_300_000_000)
    status._samples.clear()
    status._samples.extend([(0.0, 0), (31.6, 1_200_000_000)])
    status.done_bytes = 1_200_000_000
    assert status.text() == "Downloading: 1.2 GB of 16.3 GB · 38 MB/s · 7 min left"


def test_byte_counter_raises_on_cancel():
    """The tqdm subclass counts only the bytes bar and stops the download on cancel."""
    status = download.LoadStatus()
    counter = download.counter_for(status)
    bytes_bar = counter(desc="Reconstructing (incomplete total...)", unit="B", total=0)
    files_bar = counter(desc="Fetching 3 files", total=3)
    bytes_bar.update(1000)
    files_bar.update(1)
    assert (status.done_bytes, status.files_done) == (1000, 1)
    status.cancel()
    with pytest.raises(download.DownloadCancelled):
        bytes_bar.update(1)
    bytes_bar.close()
    files_bar.close()
