"""SD_COMPILE's decision, the compile cache folder across starts, regional compilation."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from core.compile import (
    FIRST_IMAGE_LABEL,
    MEGA_CACHE_FILE,
    NEW_GUIDANCE_LABEL,
    NEW_SIZE_LABEL,
    CompileShapes,
    FirstImage,
    cache_folder,
    compile_blocks,
    compiled_blocks,
    decide_compile,
    save_mega_cache,
    use_cache_folder,
)
from core.demo import build_demo_pipeline
from core.generation import GenerationRequest
from core.local import run_pipeline
from core.progress_text import progress_text

CACHE_ENV = (
    "TORCHINDUCTOR_CACHE_DIR",
    "TORCHINDUCTOR_FX_GRAPH_CACHE",
    "TORCHINDUCTOR_AUTOGRAD_CACHE",
)


@pytest.fixture(autouse=True)
def restore_cache_environment(monkeypatch):
    """use_cache_folder sets process-wide variables: put them back after each test."""
    for name in CACHE_ENV:
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("setting", "device", "expected"),
    [
        ("auto", "cuda", True),
        ("auto", "cpu", False),
        ("auto", "mps", False),
        (None, "cuda", True),
        (None, "cpu", False),
        ("true", "cpu", True),
        ("On", "cpu", True),
        ("false", "cuda", False),
        (True, "cpu", True),
        (False, "cuda", False),
    ],
)
def test_compile_decision(setting, device, expected):
    """SD_COMPILE=auto compiles on CUDA only; true / false are taken as set."""
    decided, reason = decide_compile(setting, device)
    assert decided is expected
    assert "SD_COMPILE" in reason


def test_auto_leaves_the_blocks_uncompiled_beside_a_lora_folder():
    """On CUDA, SD_COMPILE=auto compiles unless a LoRA folder is set (every LoRA switch would
    compile anew); SD_COMPILE=true still compiles there, and says nothing about LoRAs."""
    assert decide_compile("auto", "cuda", loras=False)[0] is True
    decided, reason = decide_compile("auto", "cuda", loras=True)
    assert decided is False and "SD_LORA_DIR" in reason
    assert decide_compile("true", "cuda", loras=True)[0] is True


def test_compile_decision_refuses_nonsense():
    with pytest.raises(ValueError, match="auto, true, false"):
        decide_compile("sometimes", "cuda")


def test_cache_folder_is_per_torch_version(tmp_path):
    """The cache lives under the given base, one folder per torch version."""
    folder = cache_folder(tmp_path)
    assert folder.parent == tmp_path / "torch-compile"
    assert folder.name.startswith("torch-2.")


def fake_compile(log: list[str]):
    """A stand-in for torch.compile: a cache entry per block shape in torch's cache folder."""

    def compile_fn(block) -> None:
        folder = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
        entry = folder / f"{type(block).__name__}-{block.context_pre_only}.graph"
        log.append("hit" if entry.exists() else "miss")
        entry.write_text("compiled")

    return compile_fn


@pytest.fixture(name="compiled_app")
def fixture_compiled_app(monkeypatch) -> tuple[list[str], list[Path]]:
    """The app's compiled load with `fake_compile`: (log, saved). `log` gets each block's
    cache "hit"/"miss" and a "speed" per speed record; `saved`, each folder the compile
    artifacts were written to."""
    import core.local
    from core.estimate import SPEEDS

    log: list[str] = []
    saved: list[Path] = []
    monkeypatch.setattr(
        core.local, "compile_blocks", lambda t: compile_blocks(t, compile_fn=fake_compile(log))
    )
    monkeypatch.setattr(core.local, "save_mega_cache", lambda folder: saved.append(folder) or 9)
    monkeypatch.setattr(SPEEDS, "record", lambda **kw: log.append("speed"))
    return log, saved


def test_cache_folder_is_created_then_reused_on_the_next_start(tmp_path, demo_pipe):
    """First start: the folder is created, empty; the second start finds the first's files."""
    folder = cache_folder(tmp_path / "data")
    transformer = demo_pipe.transformer  # the fake compile leaves the blocks untouched
    first_log: list[str] = []
    first = use_cache_folder(folder)
    assert folder.is_dir() and (first.reused, first.files_before) == (False, 0)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder.resolve())
    assert os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"
    assert os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "1"
    assert compile_blocks(transformer, compile_fn=fake_compile(first_log)) == 2
    assert first_log == ["miss", "miss"]  # the demo's two blocks differ (the last is context-only)

    second_log: list[str] = []
    second = use_cache_folder(folder)  # a new start with the same SD_DATA_DIR
    assert (second.reused, second.files_before) == (True, 2)
    compile_blocks(transformer, compile_fn=fake_compile(second_log))
    assert second_log == ["hit", "hit"]


def test_compile_blocks_marks_each_block_in_place():
    """Regional compilation wraps each block in place; nothing compiles before the first call."""
    pipe = build_demo_pipeline()
    transformer = pipe.transformer
    assert compiled_blocks(transformer) == 0
    assert compile_blocks(transformer) == 2
    assert compiled_blocks(transformer) == 2
    assert pipe.transformer is transformer
    with pytest.raises(ValueError, match="transformer_blocks"):
        compile_blocks(pipe.vae)


def test_mega_cache_missing_or_foreign_is_ignored(tmp_path):
    """A foreign mega-cache file does not stop a start: it is reported as not loaded."""
    (tmp_path / MEGA_CACHE_FILE).write_bytes(b"not a cache")
    facts = use_cache_folder(tmp_path)
    assert facts.mega_cache_loaded is False and facts.reused is True


def test_first_image_label():
    """The page says "compiling (first image only)" until the first compiled image is done."""
    state = FirstImage(compiled=True)
    assert state.compiles(_shapes(512)) == "compiling (first image only)"
    state.started()
    assert state.finished(_shapes(512)) is True
    assert state.compiles(_shapes(512)) is None
    assert state.seconds is not None and state.seconds >= 0
    assert state.finished(_shapes(512)) is False
    assert FirstImage(compiled=False).compiles(_shapes(512)) is None


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("SD_TEST_REAL_COMPILE") != "1",
    reason="a real inductor compile takes ~45 s on 2 cores; SD_TEST_REAL_COMPILE=1 runs it "
    "(bench/gpu_issue20.py measures the compiled speed on a GPU)",
)
def test_real_regional_compile_on_cpu_matches_eager(tmp_path):
    """torch.compile of the tiny transformer's blocks on CPU: same image within tolerance,
    inductor's cache written into the folder, and a mega-cache saved for the next start."""
    import numpy as np

    folder = cache_folder(tmp_path)
    use_cache_folder(folder)
    torch._dynamo.reset()
    request = GenerationRequest(prompt="a lighthouse", seed=5, width=512, height=512,
                                num_inference_steps=2)  # fmt: skip
    pipe = build_demo_pipeline().to(dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    eager = np.asarray(run_pipeline(pipe, request)[0][0], dtype=np.int16)
    compile_blocks(pipe.transformer)
    compiled = np.asarray(run_pipeline(pipe, request)[0][0], dtype=np.int16)
    assert np.abs(compiled - eager).max() <= 2
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files, "inductor wrote no cache files into the folder"
    assert save_mega_cache(folder) > 0
    assert use_cache_folder(folder).mega_cache_loaded is True

    # The label's rule (FirstImage.compiles) against what torch really compiles: dynamo's
    # count of new graphs per image, over sizes and guidance on/off after that first image.
    from torch._dynamo.utils import counters

    from core.seed_loop import compile_shapes

    state = FirstImage(compiled=True)
    state.finished(compile_shapes(request))
    for width, height, guidance in ((768, 512, 4.5), (512, 768, 4.5), (640, 640, 4.5),
                                    (512, 512, 0.0), (768, 768, 0.0)):  # fmt: skip
        later = dataclasses.replace(request, width=width, height=height, guidance_scale=guidance)
        said = state.compiles(compile_shapes(later))
        graphs = counters["stats"]["unique_graphs"]
        run_pipeline(pipe, later, first_image=state)
        compiled = counters["stats"]["unique_graphs"] > graphs
        assert (said is not None) == compiled, (width, height, guidance, said)
    torch._dynamo.reset()


def test_sd_compile_auto_is_off_on_the_cpu():
    """The app's default (SD_COMPILE=auto) does not compile on a CPU, and says why."""
    from core.local import load_pipeline
    from core.settings import load_settings

    assert load_settings(environ={}, secrets={}).compile == "auto"
    loaded = load_pipeline(model="demo", device="cpu", dtype="float32")
    facts = loaded.facts()
    assert (facts.compiled, facts.compiling, facts.compile_cache) == (False, False, "")
    assert (
        facts.compile_reason == "SD_COMPILE=auto: compiling pays on CUDA only; not compiled on cpu"
    )
    assert compiled_blocks(loaded.pipe.transformer) == 0


def _shapes(side: int, *batches: int) -> CompileShapes:
    return CompileShapes(pixels=side * side, batches=frozenset(batches or (2,)))


def test_after_the_first_image_a_new_size_and_a_guidance_change_compile_once_each():
    """The rule measured on the tiny blocks (see the real-compile test): a second size
    recompiles once and makes the size dynamic; guidance off after on, once for the batch."""
    state = FirstImage(compiled=True)
    assert state.compiles(_shapes(512)) == FIRST_IMAGE_LABEL
    state.finished(_shapes(512))
    assert state.compiles(_shapes(512)) is None
    assert state.compiles(_shapes(768)) == NEW_SIZE_LABEL
    state.finished(_shapes(768))
    assert state.compiles(_shapes(1024)) is None  # the size is dynamic now
    assert state.compiles(_shapes(512, 1)) == NEW_GUIDANCE_LABEL
    state.finished(_shapes(512, 1))
    assert state.compiles(_shapes(640, 2, 1)) is None
    assert state.compiled_images == 3
    assert FirstImage(compiled=False).compiles(_shapes(512)) is None
    slg_first = FirstImage(compiled=True)  # SLG's extra pass compiled both batches at once
    slg_first.finished(_shapes(512, 2, 1))
    assert slg_first.compiles(_shapes(512, 1)) is None


def test_compile_shapes_read_the_size_cfg_and_slg_steps():
    """Batches: 2 with guidance > 1, 1 without, both when SLG runs on some step."""
    from core.seed_loop import compile_shapes
    from core.slg import EXAMPLE

    plain = GenerationRequest(prompt="x", width=512, height=768, num_inference_steps=40)
    assert compile_shapes(plain) == CompileShapes(512 * 768, frozenset({2}))
    off = dataclasses.replace(plain, guidance_scale=0.0)
    assert compile_shapes(off).batches == {1}
    slg = dataclasses.replace(plain, mode_options={"slg": EXAMPLE})
    assert compile_shapes(slg).batches == {1, 2}
    few = dataclasses.replace(slg, num_inference_steps=4)  # 0.01–0.2 of 4 steps: none
    assert compile_shapes(few).batches == {2}


def test_compiled_load_labels_the_first_image_and_keeps_its_cache(tmp_path, compiled_app):
    """SD_COMPILE=true through the app's backend, with a fake compile: the cache folder is
    made under SD_DATA_DIR; the first image reports "compiling" before its first step (no
    ETA, no speed record) and then writes the compile artifacts, once; the next image is a
    plain one; a restart on the same folder finds the first start's files."""
    from core.local import LocalBackend
    from tests.conftest import SMALL

    log, saved = compiled_app
    data = tmp_path / "data"

    def backend():
        return LocalBackend(
            model="demo", device="cpu", dtype="float32", compile="true", compile_cache=data
        )

    first = backend()
    request = GenerationRequest(prompt="a lighthouse", seed=5, **SMALL)
    seen: list = []
    first.generate(request, on_progress=seen.append)
    phases = [p.phase for p in seen]
    assert phases[: phases.index("denoising")] == ["encoding", "compiling"]
    assert all(p.compiling and p.eta is None for p in seen if p.phase == "denoising")
    facts = first.loaded_facts
    assert facts.compile_cache == str(cache_folder(data).resolve())
    assert facts.compile_cache_reused is False and facts.compiling is False
    assert facts.first_image_seconds is not None
    assert saved == [cache_folder(data).resolve()] and log == ["miss", "miss"]

    seen.clear()
    first.generate(request, on_progress=seen.append)
    assert "compiling" not in [p.phase for p in seen] and len(saved) == 1
    assert log[-1] == "speed"  # a plain image: its speed counts for estimates

    # A new size compiles once more: said before its first step, artifacts kept again.
    seen.clear()
    first.generate(dataclasses.replace(request, width=576), on_progress=seen.append)
    compiling = [p for p in seen if p.phase == "compiling"]
    assert [p.detail for p in compiling] == [NEW_SIZE_LABEL] and len(saved) == 2
    assert progress_text(compiling[0]).startswith("Compiling for a new image size (once)")
    seen.clear()
    first.generate(dataclasses.replace(request, width=640), on_progress=seen.append)
    assert "compiling" not in [p.phase for p in seen] and len(saved) == 2

    again = backend().ensure_loaded()  # a restart with the same SD_DATA_DIR
    assert again.compile_cache.reused is True and again.compile_cache.files_before == 2
    assert log[-2:] == ["hit", "hit"]


def test_a_vary_as_the_first_compiled_image_says_compiling_too(tmp_path, compiled_app):
    """The first image after a compiled load may be a Vary (a link, a record): it reports
    "compiling" before its first step, no ETA and no speed record, and ends the compile;
    the next Vary is a plain one."""
    from PIL import Image

    from core.local import LocalBackend
    from core.sources import from_image

    log, saved = compiled_app
    backend = LocalBackend(
        model="demo", device="cpu", dtype="float32", compile="true", compile_cache=tmp_path
    )
    source = from_image(Image.new("RGB", (512, 512), (90, 120, 150)))
    vary = GenerationRequest(
        prompt="a lighthouse", seed=5, num_inference_steps=2, mode="img2img", source=source
    )
    seen: list = []
    backend.generate(vary, on_progress=seen.append)
    phases = [p.phase for p in seen]
    assert phases[: phases.index("denoising")] == ["encoding", "compiling"]
    assert all(p.compiling and p.eta is None for p in seen if p.phase == "denoising")
    assert backend.loaded_facts.compiling is False and "speed" not in log
    assert len(saved) == 1

    seen.clear()
    backend.generate(vary, on_progress=seen.append)
    assert "compiling" not in [p.phase for p in seen] and len(saved) == 1
    assert not any(p.compiling for p in seen) and log[-1] == "speed"


def test_progress_says_compiling_first_image_only():
    """The generator's bar reads "Compiling (first image only)" before the first step."""
    from core.generation import Progress
    from core.progress_text import progress_text

    assert progress_text(Progress("compiling", 3.2)) == "Compiling (first image only) · 3 s"
    step = Progress("denoising", 20.0, step=1, total_steps=40, compiling=True)
    assert step.eta is None and progress_text(step) == "step 1/40"
