"""LoRAs as part of a request, through the local backend on the real tiny pipeline: applied
for that request only (two overlapping sessions each get their single-run pixels), kept in
the record and the PNG the A1111 way, selected again on import, verified, refused with the
file named (hostile file, SD_COMPILE, a remote service), and part of the prompt-cache key."""

from __future__ import annotations

import dataclasses
import shutil
import threading

import pytest

from core.auth import Visitor
from core.demo_lora import make_demo_lora
from core.generation import GenerationError, GenerationRequest, LoraChoice
from core.local import LocalBackend
from core.lora import LoraError, has_adapters
from core.lora_folder import COMPILED, LoraFolder
from core.metadata import parameters_from_png, read_png_text
from core.remote import RemoteBackend
from core.settings import load_settings
from core.share import from_query, query_string
from core.usecases import generate_and_keep, regenerate_and_verify
from core.usecases.loras import match_imported
from tests.conftest import SMALL, current_store

ME = Visitor(id="local", allowed=True, is_admin=True)
PLAIN = GenerationRequest(prompt="a fox", guidance_scale=4.5, seed=3, family="demo", **SMALL)
GRAIN = GenerationRequest(
    prompt="a fox",
    guidance_scale=4.5,
    seed=3,
    family="demo",
    loras=(LoraChoice("grain", 0.8),),
    **SMALL,
)


@pytest.fixture(name="folder", scope="module")
def fixture_folder(tmp_path_factory):
    """A LoRA folder: a transformer LoRA, one that adapts CLIP-L too, and a cut-short file."""
    from core.demo import build_demo_pipeline

    folder = tmp_path_factory.mktemp("loras")
    pipe = build_demo_pipeline()
    make_demo_lora(pipe, folder / "grain.safetensors", seed=1)
    make_demo_lora(pipe, folder / "style" / "clip.safetensors", seed=2, text_encoder=True)
    data = (folder / "grain.safetensors").read_bytes()
    (folder / "broken.safetensors").write_bytes(data[: len(data) // 2])
    return folder


@pytest.fixture(name="backend", scope="module")
def fixture_backend(folder):
    backend = LocalBackend(model="demo", dtype="float32", lora_dir=folder)
    backend.ensure_loaded()
    return backend


def _pixels(backend, request) -> bytes:
    return backend.generate(request).images[0].tobytes()


def test_two_overlapping_sessions_with_and_without_a_lora_each_get_their_single_run(backend):
    """Two threads share the pipeline, one with a LoRA and one without, 3 requests each: every
    image equals that request's single run, and no adapter is left afterwards."""
    alone = {"plain": _pixels(backend, PLAIN), "grain": _pixels(backend, GRAIN)}
    assert alone["plain"] != alone["grain"]
    got: dict[str, list[bytes]] = {"plain": [], "grain": []}
    errors: list[BaseException] = []

    def session(name: str, request: GenerationRequest) -> None:
        try:
            for _ in range(3):
                got[name].append(_pixels(backend, request))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [
        threading.Thread(target=session, args=("plain", PLAIN), name="plain"),
        threading.Thread(target=session, args=("grain", GRAIN), name="grain"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert got == {"plain": [alone["plain"]] * 3, "grain": [alone["grain"]] * 3}
    assert not has_adapters(backend.loaded.pipe)


def test_a_lora_is_kept_the_a1111_way_selected_on_import_and_verified(backend, folder):
    """The record keeps the LoRA with its hash; the PNG's parameters carry
    `<lora:grain:0.8>` and `Lora hashes`; importing the PNG selects the file here (even
    renamed); Regenerate & verify applies it again and gets the same pixels."""
    settings = load_settings()
    outcome = generate_and_keep(
        GRAIN, settings=settings, visitor=ME, backend=backend, session_id="s"
    )
    store = current_store()
    record = store.get(outcome.record_ids[0])
    (entry,) = record.lora_entries()
    expected = backend.lora_hashes(["grain"])["grain"]
    assert (entry["name"], entry["weight"], entry["sha256"]) == ("grain", 0.8, expected)
    png = store.png_bytes(record.id)
    parameters = read_png_text(png)["parameters"]
    assert parameters.startswith("a fox <lora:grain:0.8>\n")
    assert f'Lora hashes: "grain: {expected[:12]}"' in parameters
    parsed = parameters_from_png(png)
    assert parsed.values["prompt"] == "a fox" and parsed.values["loras"] == [("grain", 0.8)]
    assert match_imported(parsed, backend).selected == (LoraChoice("grain", 0.8),)
    verified = regenerate_and_verify(store, record, settings=settings, visitor=ME, backend=backend)
    assert verified.verification is not None and verified.verification.identical
    # The same file under another name here: found by its hash, as A1111's paste does.
    shutil.copy(folder / "grain.safetensors", folder / "grain-v1.safetensors")
    (folder / "grain.safetensors").rename(folder / "grain.moved")
    try:
        backend.lora_folder._listed = None  # list the folder now, not in 2 s
        assert match_imported(parsed, backend).selected == (LoraChoice("grain-v1", 0.8),)
    finally:
        (folder / "grain.moved").rename(folder / "grain.safetensors")
        (folder / "grain-v1.safetensors").unlink()
        backend.lora_folder._listed = None


def test_an_import_names_the_loras_that_are_not_here(backend):
    """An A1111 PNG text with two LoRAs, one of them here: that one is selected, the other
    is named as missing."""
    from core.metadata import parse_parameters

    parsed = parse_parameters(
        "a cat <lora:grain:0.5> <lora:absent:1>\nSteps: 2, Sampler: Euler, CFG scale: 4, "
        'Seed: 1, Size: 512x512, Lora hashes: "absent: 0123456789ab"'
    )
    found = match_imported(parsed, backend)
    assert found.selected == (LoraChoice("grain", 0.5),) and found.missing == ("absent",)


def test_a_hostile_file_is_refused_naming_it_and_the_pipeline_stays_clean(backend):
    """A cut-short file: refused before the queue turn, naming the file; the next request
    without a LoRA gives the same pixels as before."""
    before = _pixels(backend, PLAIN)
    broken = GenerationRequest(**{**SMALL, "family": "demo"}, loras=(LoraChoice("broken"),))
    with pytest.raises(LoraError, match="LoRA `broken.safetensors` cannot be used"):
        backend.generate(broken)
    assert not has_adapters(backend.loaded.pipe) and not backend.queue.busy
    assert _pixels(backend, PLAIN) == before


def test_a_clip_lora_is_part_of_the_prompt_cache_key(backend):
    """The same prompt with a LoRA on CLIP is encoded again (not taken from the cache), and
    the plain prompt's embeddings are still the plain ones afterwards."""
    plain = _pixels(backend, PLAIN)
    misses = backend.prompt_cache.misses
    clip = GenerationRequest(
        prompt="a fox",
        guidance_scale=4.5,
        seed=3,
        family="demo",
        loras=(LoraChoice("style/clip", 1.0),),
        **SMALL,
    )
    with_clip = _pixels(backend, clip)
    assert backend.prompt_cache.misses == misses + 1
    fresh = LocalBackend(model="demo", dtype="float32", lora_dir=backend.lora_folder.folder)
    assert with_clip == _pixels(fresh, clip)  # what a cache never filled gives
    assert _pixels(backend, PLAIN) == plain


def test_a_vary_with_a_clip_lora_is_not_handed_the_plain_prompts_embeddings(backend):
    """A Vary encodes under text to image's cache key: with a LoRA on CLIP that key names
    it, so after the plain prompt's Vary the LoRA's Vary is encoded again and equals what a
    cache never filled gives."""
    from core.sources import from_image

    source = from_image(backend.generate(PLAIN).images[0])
    vary = GenerationRequest(
        **{**SMALL, "width": None, "height": None},
        prompt="a fox",
        guidance_scale=4.5,
        seed=4,
        family="demo",
        mode="img2img",
        source=source,
    )
    clip = dataclasses.replace(vary, loras=(LoraChoice("style/clip", 1.0),))
    _pixels(backend, vary)  # the plain prompt's embeddings are in the cache now
    with_clip = _pixels(backend, clip)
    fresh = LocalBackend(model="demo", dtype="float32", lora_dir=backend.lora_folder.folder)
    assert with_clip == _pixels(fresh, clip)
    assert with_clip != _pixels(backend, vary)


def test_sd_compile_turns_loras_off_with_the_reason(folder):
    """With SD_COMPILE on, the generator offers no LoRA and says why, and a request that
    names one is refused with the same words."""
    backend = LocalBackend(model="demo", lora_dir=folder, compile=True)
    assert backend.loras().note == COMPILED and backend.loras().names
    with pytest.raises(LoraError, match="SD_COMPILE"):
        LoraFolder(folder).weights([LoraChoice("grain")], None, compiled=True)
    # SD_COMPILE=auto (the default) never compiles beside a LoRA folder: LoRAs are offered.
    auto = LocalBackend(model="demo", lora_dir=folder, compile="auto")
    assert auto.loras().note == "" and "grain" in auto.loras().names


def test_a_remote_service_refuses_loras_before_any_call():
    """LoRAs apply to the local pipeline only: the remote backend says so, calls nothing."""
    remote = RemoteBackend(url="http://127.0.0.1:9/unused", model="m")
    with pytest.raises(GenerationError, match="LoRAs apply to the local pipeline only"):
        remote.generate(GenerationRequest(**SMALL, loras=(LoraChoice("grain"),)))
    assert remote.loras().names == () and "SD_BACKEND=local" in remote.loras().note


def test_a_shared_link_carries_the_loras(monkeypatch):
    """`loras=grain:0.8,style/clip:1` in a link; a bad entry is named and left out."""
    query = query_string({"prompt": "a fox", "loras": [("grain", 0.8), ("style/clip", 1.0)]})
    assert "loras=grain%3A0.8%2Cstyle%2Fclip%3A1" in query
    values, warnings = from_query({"loras": "grain:0.8,style/clip:1,bad:99"})
    assert values["loras"] == [("grain", 0.8), ("style/clip", 1.0)]
    assert warnings == ["LoRA `bad`: its weight must be in -4–4; got 99. Ignored."]
