"""LoRAs on the real tiny SD3 pipeline: a LoRA made with PEFT in the diffusers SD3 format,
applied for one request and removed after; hostile files refused with the pipeline clean."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import threading

import pytest

from core.demo_lora import make_demo_lora
from core.lora import (
    MAX_HEADER_BYTES,
    Found,
    LoraCache,
    LoraChoice,
    LoraError,
    adapter_bytes,
    addnet_hash,
    applied_loras,
    discover_loras,
    has_adapters,
    read_header,
    read_lora,
)
from core.queue import GenerationQueue
from testkit.render import raw_pixels


@pytest.fixture(name="pipe", scope="module")
def fixture_pipe():
    """This module's own tiny pipeline (LoRAs go on and off it)."""
    from core.demo import build_demo_pipeline

    pipe = build_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(name="lora_dir", scope="module")
def fixture_lora_dir(pipe, tmp_path_factory):
    """A folder with a transformer LoRA and one that also adapts CLIP-L."""
    folder = tmp_path_factory.mktemp("loras")
    make_demo_lora(pipe, folder / "grain.safetensors", seed=1)
    make_demo_lora(pipe, folder / "clip.safetensors", seed=2, text_encoder=True)
    return folder


@pytest.fixture(name="grain", scope="module")
def fixture_grain(lora_dir):
    return read_lora(lora_dir / "grain.safetensors")


@pytest.fixture(name="plain", scope="module")
def fixture_plain(pipe, lora_dir):
    """Pixels before any LoRA was ever loaded on this pipeline (the LoRA files exist)."""
    assert not has_adapters(pipe)
    return raw_pixels(pipe)


@pytest.fixture(name="no_pickle_loading")
def fixture_no_pickle_loading(monkeypatch):
    """Fail the test if anything calls torch.load (a pickle would run code)."""
    import torch

    def tripwire(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", tripwire)


# --- the file and its hash ----------------------------------------------------------------
def test_the_made_lora_reads_back_as_safetensors_does(lora_dir, grain):
    """Our one-read loader gives the tensors safetensors gives, and the PEFT metadata."""
    import torch
    from safetensors.torch import load_file

    reference = load_file(lora_dir / "grain.safetensors")
    assert set(reference) == set(grain.state_dict)
    assert all(torch.equal(reference[k], grain.state_dict[k]) for k in reference)
    assert grain.components == {"transformer"} and not grain.touches_text_encoders
    assert grain.adapter_metadata["transformer.lora_alpha"] == 8  # scale 2: alpha ≠ rank
    assert grain.nbytes == sum(t.numel() * t.element_size() for t in reference.values())


def test_hash_is_a1111s_sha256_of_the_tensor_data(lora_dir, grain, tmp_path):
    """sha256 of the bytes after the header, first 12 hex as the short hash; unchanged when
    only the header's metadata changes (the whole-file sha256 changes)."""
    from safetensors.torch import save_file

    data = (lora_dir / "grain.safetensors").read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    expected = hashlib.sha256(data[8 + length :]).hexdigest()
    assert grain.sha256 == expected == addnet_hash(lora_dir / "grain.safetensors")
    assert grain.short_hash == expected[:12]
    retitled = tmp_path / "retitled.safetensors"
    save_file(dict(grain.state_dict), retitled, metadata={"ss_output_name": "something else"})
    assert addnet_hash(retitled) == grain.sha256
    assert hashlib.sha256(retitled.read_bytes()).hexdigest() != hashlib.sha256(data).hexdigest()


# --- applied for one request ----------------------------------------------------------------
def test_weight_one_changes_pixels_weight_zero_and_removal_do_not(pipe, grain, plain):
    """Weight 1 changes the image; weight 0 gives the plain pixels bit for bit; after the
    block no adapter is left and the pixels are those from before any LoRA was loaded."""
    with applied_loras(pipe, [(grain, 1.0)]) as applied:
        assert has_adapters(pipe)
        assert adapter_bytes(pipe) == {"sd_lora_0": grain.nbytes}
        with_lora = raw_pixels(pipe)
    assert applied.loras == (("grain", grain.sha256, 1.0),)
    assert with_lora != plain
    assert not has_adapters(pipe) and raw_pixels(pipe) == plain
    with applied_loras(pipe, [(grain, 0.0)]):
        assert raw_pixels(pipe) == plain
    assert not has_adapters(pipe) and raw_pixels(pipe) == plain


def test_in_memory_loading_equals_diffusers_loading_the_file(pipe, lora_dir, plain):
    """The same pixels as `load_lora_weights(folder, weight_name=…)` (which reads the file's
    rank/alpha metadata), for a transformer LoRA and one that adapts CLIP-L too."""
    for name in ("grain", "clip"):
        weights = read_lora(lora_dir / f"{name}.safetensors")
        with applied_loras(pipe, [(weights, 1.0)]):
            ours = raw_pixels(pipe)
        pipe.load_lora_weights(
            str(lora_dir),
            weight_name=f"{name}.safetensors",
            adapter_name="ref",
            use_safetensors=True,
        )
        try:
            theirs = raw_pixels(pipe)
        finally:
            pipe.unload_lora_weights()
        assert ours == theirs != plain, name
    assert raw_pixels(pipe) == plain


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning")
def test_a_clip_lora_is_flagged_so_cached_prompt_embeddings_are_not_reused(pipe, lora_dir, grain):
    """A LoRA on the text encoders changes the embeddings: `touches_text_encoders` and a
    cache tag say so; two LoRAs apply together with their own weights."""
    clip = read_lora(lora_dir / "clip.safetensors")
    assert clip.components == {"transformer", "text_encoder"} and clip.touches_text_encoders
    with applied_loras(pipe, [(clip, 1.0), (grain, 0.5)]) as applied:
        assert set(adapter_bytes(pipe)) == {"sd_lora_0", "sd_lora_1"}
    assert applied.touches_text_encoders
    assert applied.cache_tag == f"{clip.short_hash}:1;{grain.short_hash}:0.5"
    assert not has_adapters(pipe)


def test_an_error_inside_the_block_still_removes_the_lora(pipe, grain, plain):
    """A stop or a failure during generation leaves the pipeline without adapters."""
    with pytest.raises(KeyboardInterrupt), applied_loras(pipe, [(grain, 1.0)]):
        raise KeyboardInterrupt
    assert not has_adapters(pipe) and raw_pixels(pipe) == plain


def test_two_overlapping_sessions_each_get_their_single_run_pixels(pipe, grain, plain):
    """Two threads share the pipeline through the queue's slot, one with a LoRA and one
    without, interleaving three requests each: every image equals its single run."""
    with applied_loras(pipe, [(grain, 1.0)]):
        with_lora = raw_pixels(pipe)
    queue = GenerationQueue(max_waiting=5)
    results: dict[str, list[bytes]] = {"with": [], "without": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def session(user: str, loras) -> None:
        try:
            start.wait()
            for _ in range(3):
                with queue.slot(user=user), applied_loras(pipe, loras):
                    results[user].append(raw_pixels(pipe))
        except BaseException as exc:  # handed to the main thread below
            errors.append(exc)

    threads = [
        threading.Thread(target=session, args=("with", [(grain, 1.0)])),
        threading.Thread(target=session, args=("without", [])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert results["with"] == [with_lora] * 3
    assert results["without"] == [plain] * 3
    assert not has_adapters(pipe)


def test_weights_out_of_range_and_too_many_loras_are_refused(pipe, grain):
    with (
        pytest.raises(LoraError, match="must be in -4–4; got 5"),
        applied_loras(pipe, [(grain, 5.0)]),
    ):
        pass
    with pytest.raises(LoraError, match="at most 8"), applied_loras(pipe, [(grain, 1.0)] * 9):
        pass
    assert not has_adapters(pipe)


def test_the_cache_reads_a_file_once_and_again_when_it_changes(pipe, tmp_path):
    folder = tmp_path / "l"
    make_demo_lora(pipe, folder / "a.safetensors", seed=4)
    file = discover_loras(folder).files[0]
    cache = LoraCache()
    first = cache.get(file)
    assert cache.get(file) is first and cache.entries() == [("a", first.nbytes)]
    make_demo_lora(pipe, folder / "a.safetensors", seed=5)  # replaced: new size or mtime
    assert cache.get(discover_loras(folder).files[0]).sha256 != first.sha256


# --- hostile files --------------------------------------------------------------------------
def _safetensors(tensors: dict, metadata: dict | None = None) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def _header_with(data: bytes, header: dict) -> bytes:
    """The file `data` with its JSON header replaced (tensor bytes kept)."""
    length = struct.unpack("<Q", data[:8])[0]
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + length :]


def _variants(grain, lora_dir) -> dict[str, tuple[bytes, str]]:
    """Hostile files: name → (content written as `<name>.safetensors`, what the message says)."""
    import torch

    good = (lora_dir / "grain.safetensors").read_bytes()
    length = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8 : 8 + length])
    tensors = dict(grain.state_dict)
    first_a = next(k for k in tensors if k.endswith("lora_A.weight"))
    wrong_shape = {**tensors, first_a: torch.zeros(4, 64)}
    flux = {
        "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 32),
        "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(32, 4),
    }
    sdxl = {"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 32)}
    kohya = {"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": torch.zeros(4, 32)}
    integers = {k: v.to(torch.int32) if k == first_a else v for k, v in tensors.items()}
    lying_rank = dict(grain.adapter_metadata)
    lying_rank["transformer.r"] = 8
    return {
        "pickle": (pickle.dumps({"weights": [1, 2, 3]}, protocol=2), "a pickle"),
        "torch-zip": (b"PK\x03\x04" + b"\0" * 64, "pickled PyTorch checkpoint"),
        "truncated": (good[: len(good) // 2], "cut short"),
        "tiny": (b"\x01\x02", "too short"),
        "length-lies": (struct.pack("<Q", length + len(good)) + good[8:], "the file has"),
        "length-short": (struct.pack("<Q", length - 10) + good[8:], "not valid JSON"),
        "huge-header": (struct.pack("<Q", MAX_HEADER_BYTES + 1) + good[8:], "at most"),
        "not-json": (struct.pack("<Q", 4) + b"{{{{" + good[8 + length :], "not valid JSON"),
        "offsets-lie": (
            _header_with(good, {**header, first_a: {**header[first_a], "data_offsets": [0, 8]}}),
            "does not match its byte size",
        ),
        "wrong-shapes": (_safetensors(wrong_shape), "shapes that do not fit this model"),
        "flux-keys": (_safetensors(flux), "do not exist in this model"),
        "sdxl-keys": (_safetensors(sdxl), "for a UNet model"),
        "kohya-keys": (_safetensors(kohya), "kohya/A1111 key format"),
        "int-tensors": (_safetensors(integers), "not float"),
        "empty": (_safetensors({}), "holds no tensors"),
        "rank-lies": (
            _safetensors(tensors, {"lora_adapter_metadata": json.dumps(lying_rank)}),
            "diffusers could not load it",
        ),
    }


HOSTILE = [
    "pickle",
    "torch-zip",
    "truncated",
    "tiny",
    "length-lies",
    "length-short",
    "huge-header",
    "not-json",
    "offsets-lie",
    "wrong-shapes",
    "flux-keys",
    "sdxl-keys",
    "kohya-keys",
    "int-tensors",
    "empty",
    "rank-lies",
]


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_files_are_refused_naming_the_file_and_leave_the_pipeline_clean(
    kind, pipe, grain, lora_dir, plain, tmp_path, no_pickle_loading
):
    """Each hostile file gives a LoraError naming it and saying why; torch.load is never
    called; the pipeline has no adapter afterwards and gives the plain pixels."""
    content, says = _variants(grain, lora_dir)[kind]
    path = tmp_path / f"{kind}.safetensors"
    path.write_bytes(content)
    with pytest.raises(LoraError) as caught:
        weights = read_lora(path)
        with applied_loras(pipe, [(weights, 1.0)]):
            pytest.fail("a hostile LoRA was applied")
    message = str(caught.value)
    assert f"LoRA `{kind}.safetensors` cannot be used: " in message
    assert says in message
    assert not has_adapters(pipe)
    if kind in ("wrong-shapes", "flux-keys", "rank-lies"):  # these reached the pipeline
        assert raw_pixels(pipe) == plain


def test_a_huge_file_is_refused_by_its_size_before_it_is_read(tmp_path):
    """A 3 GB (sparse) file is refused from its size: by discovery and by the reader."""
    path = tmp_path / "huge.safetensors"
    with path.open("wb") as handle:
        handle.truncate(3 * 10**9)
    found = discover_loras(tmp_path)
    assert found.files == () and "3.0 GB" in found.refused[0].reason
    with pytest.raises(LoraError, match="`huge.safetensors` cannot be used: it is 3.0 GB"):
        read_lora(path)
    with pytest.raises(LoraError, match="over 0.0 GB"):
        read_header(tmp_path / "huge.safetensors", max_bytes=1000)


def test_a_header_over_a_lowered_cap_is_refused(grain, tmp_path):
    """The header cap is a parameter: 5 KB of metadata against a 1 KB cap is refused."""
    path = tmp_path / "meta.safetensors"
    path.write_bytes(_safetensors(dict(grain.state_dict), {"notes": "x" * 5000}))
    with pytest.raises(LoraError, match="at most 1,024 are read"):
        read_lora(path, max_header_bytes=1024)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickled_suffixes_are_refused_by_name(suffix, tmp_path, no_pickle_loading):
    path = tmp_path / f"old{suffix}"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(LoraError, match="pickled checkpoint"):
        read_lora(path)
    assert "can run any code" in discover_loras(tmp_path).refused[0].reason


def test_discovery_lists_safetensors_and_says_why_others_are_refused(pipe, tmp_path):
    """Sub-folders give "sub/name"; pickles and bad names are refused with a reason; other
    files and hidden ones are ignored."""
    (tmp_path / "sub").mkdir()
    for name in (
        "b.safetensors",
        "sub/a.safetensors",
        "bad:name.safetensors",
        ".hidden.safetensors",
    ):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "old.ckpt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("hi")
    found = discover_loras(tmp_path)
    assert [f.name for f in found.files] == ["b", "sub/a"]
    reasons = {r.name: r.reason for r in found.refused}
    assert set(reasons) == {"bad:name", "old"}
    assert "rename it" in reasons["bad:name"] and "pickled" in reasons["old"]
    assert discover_loras(tmp_path / "missing") == Found()
    assert discover_loras(tmp_path, max_files=1).truncated


def test_lora_choice_names_come_from_the_folder(lora_dir):
    found = discover_loras(lora_dir)
    assert [f.name for f in found.files] == ["clip", "grain"]
    assert LoraChoice("grain").weight == 1.0


def test_a_float32_lora_file_works_on_the_bfloat16_pipeline_the_app_loads(grain):
    """The app loads bf16 on CPUs with bf16 support: the LoRA is cast to it, changes the
    pixels, and comes off leaving them bit-identical."""
    import torch

    from core.demo import build_demo_pipeline

    pipe = build_demo_pipeline(dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    before = raw_pixels(pipe)
    with applied_loras(pipe, [(grain, 1.0)]):
        lora_params = [p for n, p in pipe.transformer.named_parameters() if "lora_A" in n]
        assert lora_params and all(p.dtype == torch.bfloat16 for p in lora_params)
        assert raw_pixels(pipe) != before
    assert not has_adapters(pipe) and raw_pixels(pipe) == before
