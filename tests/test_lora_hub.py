"""Hub LoRAs (`owner/repo[/file.safetensors]`) through the real huggingface_hub download.

The Hub is the loopback stand-in (testkit/hub_standin.py) serving a tiny SD3 LoRA made for
the demo model under a repo id; the backend's `HubLoras` is pointed at it (`endpoint`, and
in one subprocess through HF_ENDPOINT / HF_HOME as the app is), with its own cache folder.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from core.auth import Visitor
from core.demo_lora import make_demo_lora
from core.generation import GenerationRequest, LoraChoice
from core.local import LocalBackend
from core.lora import LoraError, addnet_hash, has_adapters
from core.lora_hub import DEFAULT_FILE, HubLoras, hub_id
from core.metadata import parameters_from_png, parse_parameters, read_png_text
from core.remote import RemoteBackend
from core.settings import load_settings
from core.usecases import generate_and_keep
from core.usecases.loras import match_imported
from testkit.hub_standin import HubStandIn
from tests.conftest import APP_ROOT, SMALL, current_store

REPO = "someone/grain-sd3"
LORA = f"{REPO}/{DEFAULT_FILE}"
ME = Visitor(id="local", allowed=True, is_admin=True)
PLAIN = GenerationRequest(prompt="a fox", guidance_scale=4.5, seed=3, family="demo", **SMALL)


def _request(name: str, weight: float = 1.0) -> GenerationRequest:
    return GenerationRequest(
        prompt="a fox",
        guidance_scale=4.5,
        seed=3,
        family="demo",
        loras=(LoraChoice(name, weight),),
        **SMALL,
    )


@pytest.fixture(name="repo", scope="module")
def fixture_repo(tmp_path_factory):
    """The repo's files: diffusers' default LoRA file name, and one in a subfolder."""
    from core.demo import build_demo_pipeline

    repo = tmp_path_factory.mktemp("hub-repo")
    pipe = build_demo_pipeline()
    make_demo_lora(pipe, repo / DEFAULT_FILE, seed=1)
    make_demo_lora(pipe, repo / "v2" / "grain-strong.safetensors", seed=2)
    return repo


@pytest.fixture(name="hub", scope="module")
def fixture_hub(repo):
    server = HubStandIn(repo, repo_id=REPO).start()
    yield server
    server.stop()


@pytest.fixture(name="backend", scope="module")
def fixture_backend(hub, repo, tmp_path_factory):
    """No SD_LORA_DIR here: Hub LoRAs need none."""
    backend = LocalBackend(model="demo", dtype="float32")
    backend.lora_folder.hub = HubLoras(
        endpoint=hub.url, cache_dir=tmp_path_factory.mktemp("hf-cache")
    )
    backend.ensure_loaded()
    return backend


def _pixels(backend, request) -> bytes:
    return backend.generate(request).images[0].tobytes()


def test_hub_ids_are_checked_before_any_request(backend, hub):
    """owner/repo means its pytorch_lora_weights.safetensors; a pickle or another format,
    a link, odd characters or an over-long id are refused by name, and a request naming a
    pickle id never reaches the Hub."""
    assert hub_id(" someone/grain-sd3 ") == LORA
    assert hub_id(f"{REPO}/v2/grain-strong.safetensors") == f"{REPO}/v2/grain-strong.safetensors"
    for bad, why in (
        (f"{REPO}/model.bin", "pickled"),
        (f"{REPO}/model.ckpt", "pickled"),
        (f"{REPO}/model.gguf", "only .safetensors"),
        (f"https://huggingface.co/{REPO}", "not a link"),
        ("someone/../etc/x.safetensors", "not a Hub id"),
        ("some one/repo", "not a Hub id"),
        ("someone", "not a Hub id"),
        (f"someone/{'r' * 90}/x.safetensors", "at most 100"),
    ):
        with pytest.raises(LoraError, match=why):
            hub_id(bad)
    before = len(hub.requests)
    with pytest.raises(LoraError, match="not a Hub id"):
        backend.generate(_request("someone/x.safetensors"))
    with pytest.raises(LoraError):  # a .bin name is no Hub id: looked for in the folder only
        backend.generate(_request(f"{REPO}/model.bin"))
    assert len(hub.requests) == before
    assert not has_adapters(backend.loaded.pipe)


def test_a_hub_lora_is_downloaded_applied_and_recorded_like_a_folder_lora(backend, hub, repo):
    """Weight 1 changes the pixels; the file lands in the HF cache (one GET); the record
    keeps the id with A1111's hash; the PNG's infotext carries `<lora:id:1>` and `Lora
    hashes`; importing it selects the Hub LoRA; a plain request after it is unchanged."""
    plain = _pixels(backend, PLAIN)
    request = _request(LORA)
    outcome = generate_and_keep(
        request, settings=load_settings(), visitor=ME, backend=backend, session_id="s"
    )
    store = current_store()
    record = store.get(outcome.record_ids[0])
    with_lora = store.png_bytes(record.id)
    assert hub.file_gets() == [DEFAULT_FILE]
    cached = backend.lora_folder.hub.cached(LORA)
    assert cached is not None and str(cached).startswith(backend.lora_folder.hub.cache_dir)
    expected = addnet_hash(repo / DEFAULT_FILE)
    (entry,) = record.lora_entries()
    assert (entry["name"], entry["weight"], entry["sha256"]) == (LORA, 1.0, expected)
    parameters = read_png_text(with_lora)["parameters"]
    assert parameters.startswith(f"a fox <lora:{LORA}:1>\n")
    assert f'Lora hashes: "{LORA}: {expected[:12]}"' in parameters
    parsed = parameters_from_png(with_lora)
    found = match_imported(parsed, backend)
    assert found.selected == (LoraChoice(LORA, 1.0),) and found.from_hub == ()
    assert _pixels(backend, request) != plain  # the LoRA changes the image at weight 1
    assert hub.file_gets() == [DEFAULT_FILE]  # the second use reads the cached copy
    assert _pixels(backend, PLAIN) == plain
    assert not has_adapters(backend.loaded.pipe)


def test_the_same_file_from_the_hub_and_from_the_folder_gives_the_same_pixels(
    backend, hub, repo, tmp_path
):
    """The Hub file goes through the same reader: same pixels as that file in SD_LORA_DIR."""
    name = f"{REPO}/v2/grain-strong.safetensors"
    from_hub = _pixels(backend, _request(name, 0.7))
    folder = LocalBackend(model="demo", dtype="float32", lora_dir=repo / "v2")
    folder._loaded = backend.loaded  # the same pipeline, read through the folder
    assert _pixels(folder, _request("grain-strong", 0.7)) == from_hub


def test_an_oversized_file_is_refused_before_its_body_is_asked_for(repo, tmp_path):
    server = HubStandIn(repo, repo_id=REPO).start()
    try:
        hub = HubLoras(endpoint=server.url, cache_dir=tmp_path, max_bytes=1000)
        with pytest.raises(LoraError, match=r"someone/grain-sd3.*over .*not downloaded"):
            hub.file(LORA)
        assert server.file_gets() == []
        assert server.paths_requested("HEAD")  # the size came from the Hub's metadata
    finally:
        server.stop()


def test_an_unreachable_or_missing_hub_file_gives_one_line_naming_the_id(backend, hub):
    """A closed port: one line naming the id and the fix, the pipeline untouched and the
    next request served; a file the repo lacks and a repo the Hub lacks say so."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    offline = LocalBackend(model="demo", dtype="float32")
    offline._loaded = backend.loaded
    offline.lora_folder.hub = HubLoras(endpoint=closed, cache_dir=backend.lora_folder.hub.cache_dir)
    other = f"{REPO}/v2/never-downloaded.safetensors"
    with pytest.raises(LoraError) as caught:
        offline.generate(_request(other))
    message = str(caught.value)
    assert "\n" not in message and "never-downloaded" in message
    assert message.startswith("The Hub cannot be reached") and "SD_LORA_DIR" in message
    assert not has_adapters(backend.loaded.pipe)
    offline.generate(PLAIN)  # the rest of the app is untouched
    with pytest.raises(LoraError, match="the repo has no file"):
        backend.generate(_request(other))
    with pytest.raises(LoraError, match="no repo `nobody/nothing` on the Hub"):
        backend.generate(_request("nobody/nothing/x.safetensors"))


def test_a_gated_repo_says_to_accept_its_terms_and_set_hf_token(repo, tmp_path):
    server = HubStandIn(repo, repo_id=REPO, gated=True).start()
    try:
        hub = HubLoras(endpoint=server.url, cache_dir=tmp_path)
        with pytest.raises(LoraError, match=r"is gated: accept its terms .* set HF_TOKEN"):
            hub.file(LORA)
        assert server.file_gets() == []
    finally:
        server.stop()


def test_imports_say_where_a_hub_lora_comes_from(backend, tmp_path):
    """An A1111 text naming a Hub LoRA not downloaded yet: selected, to be fetched from its
    page; on a backend without Hub LoRAs (remote) it is missing."""
    parsed = parse_parameters(
        f"a cat <lora:{REPO}/v9/new.safetensors:0.5>\nSteps: 2, Sampler: Euler, CFG scale: 4, "
        "Seed: 1, Size: 512x512"
    )
    found = match_imported(parsed, backend)
    assert found.selected == (LoraChoice(f"{REPO}/v9/new.safetensors", 0.5),)
    assert found.from_hub == (f"{REPO}/v9/new.safetensors",)
    remote = RemoteBackend(url="http://127.0.0.1:9/unused", model="m")
    found = match_imported(parsed, remote)
    assert found.missing == (f"{REPO}/v9/new.safetensors",) and found.note


def test_hf_endpoint_and_hf_home_are_what_a_default_hub_loras_uses(hub, tmp_path):
    """As the app runs: no endpoint or cache given, so huggingface_hub's own settings
    (read at import, hence subprocesses) decide; the file lands under HF_HOME. Then with
    HF_HUB_OFFLINE=1 the downloaded file is used and another one gets the offline line."""
    script = (
        "import json, sys\n"
        "from core.lora import LoraError\n"
        "from core.lora_hub import HubLoras\n"
        "out = []\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        out.append(str(HubLoras().file(name).path))\n"
        "    except LoraError as exc:\n"
        "        out.append('error: ' + str(exc))\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)

    def run(*names: str, **extra: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", script, *names],
            cwd=APP_ROOT,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    (path,) = run(LORA)
    assert path.startswith(str(tmp_path / "hf" / "hub")) and path.endswith(DEFAULT_FILE)
    gets = len(hub.file_gets())
    again, missing = run(LORA, f"{REPO}/v2/grain-strong.safetensors", HF_HUB_OFFLINE="1")
    assert again == path and len(hub.file_gets()) == gets
    assert missing.startswith("error: The Hub cannot be reached (offline")
    assert "grain-strong" in missing and "\n" not in missing


def test_a_folder_file_named_like_a_hub_id_is_refused(tmp_path):
    """A folder LoRA's name never ends in .safetensors (that marks a Hub id)."""
    from core.lora import discover_loras

    (tmp_path / "x.safetensors.safetensors").write_bytes(b"unread")
    found = discover_loras(tmp_path)
    assert found.files == () and "twice" in found.refused[0].reason
