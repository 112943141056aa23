"""The local engine against the real (tiny) StableDiffusion3Pipeline: no mocks."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from core.generation import GenerationError, GenerationRequest, GenerationStopped
from core.local import LocalBackend, load_pipeline, run_pipeline
from tests.conftest import SMALL


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(name="loaded", scope="module")
def fixture_loaded(tmp_path_factory):
    """The saved tiny pipeline loaded through the real from_pretrained path, in float32."""
    from core.demo import save_demo_pipeline

    folder = save_demo_pipeline(tmp_path_factory.mktemp("m") / "tiny")
    return load_pipeline(model=str(folder), device="cpu", dtype="float32")


def test_loader_uses_from_pretrained_with_dtype_and_device(loaded):
    """Loading a saved folder gives a real SD3 pipeline on the CPU in the requested dtype."""
    from diffusers import StableDiffusion3Pipeline

    assert isinstance(loaded.pipe, StableDiffusion3Pipeline)
    assert loaded.pipe.transformer.dtype == torch.float32
    assert loaded.pipe.device.type == "cpu"
    assert (loaded.choice.device, loaded.choice.dtype) == ("cpu", "float32")


def test_vae_slicing_and_tiling_are_enabled_on_the_real_vae(loaded):
    """The loader turns on the VAE's own slicing, and tiling as SD_VAE_TILE=auto decided
    (the pipeline has no such methods)."""
    assert loaded.pipe.vae.use_slicing is True
    assert loaded.pipe.vae.use_tiling is bool(loaded.plan.vae_tile)
    assert loaded.plan.vae_reason.startswith(("untiled", "512-px tiles"))
    assert not hasattr(loaded.pipe, "enable_vae_slicing")


def test_loaded_folder_matches_the_in_memory_demo(loaded, demo_pipe):
    """save_pretrained → from_pretrained gives byte-identical images to the built pipeline."""
    request = GenerationRequest(prompt="a lighthouse", seed=3, **SMALL)
    (a,), _ = run_pipeline(loaded.pipe, request)
    (b,), _ = run_pipeline(demo_pipe, request)
    assert a.tobytes() == b.tobytes()


def test_arguments_reach_the_pipeline_like_a_direct_call(demo_pipe):
    """The engine's image equals a direct pipeline call with the same arguments and CPU seed."""
    request = GenerationRequest(
        prompt="a cat",
        negative_prompt="blurry",
        seed=123,
        width=768,
        height=512,
        guidance_scale=3.0,
        num_inference_steps=2,
    )
    (ours,), _ = run_pipeline(demo_pipe, request)
    direct = demo_pipe(
        prompt="a cat",
        negative_prompt="blurry",
        guidance_scale=3.0,
        num_inference_steps=2,
        width=768,
        height=512,
        generator=torch.Generator(device="cpu").manual_seed(123),
    ).images[0]
    assert ours.size == (768, 512)
    assert ours.tobytes() == direct.tobytes()


def test_same_seed_gives_identical_pixels(demo_pipe):
    """Two runs with one seed are identical to the byte."""
    request = GenerationRequest(prompt="a fox", seed=5, **SMALL)
    (a,), _ = run_pipeline(demo_pipe, request)
    (b,), _ = run_pipeline(demo_pipe, request)
    assert a.tobytes() == b.tobytes()


def test_different_seed_gives_different_pixels(demo_pipe):
    """Another seed changes the image."""
    (a,), _ = run_pipeline(demo_pipe, GenerationRequest(prompt="a fox", seed=5, **SMALL))
    (b,), _ = run_pipeline(demo_pipe, GenerationRequest(prompt="a fox", seed=6, **SMALL))
    assert np.abs(pixels(a) - pixels(b)).max() > 0


def test_different_prompt_gives_different_pixels(demo_pipe):
    """The prompt reaches the model: another prompt changes the image."""
    (a,), _ = run_pipeline(demo_pipe, GenerationRequest(prompt="a fox", seed=5, **SMALL))
    (b,), _ = run_pipeline(demo_pipe, GenerationRequest(prompt="a ship", seed=5, **SMALL))
    assert np.abs(pixels(a) - pixels(b)).max() > 0


def test_batch_image_i_equals_a_single_run_with_seed_plus_i(demo_pipe):
    """Each image of a batch can be remade alone from its own seed."""
    images, _ = run_pipeline(
        demo_pipe, GenerationRequest(prompt="x", seed=40, num_images=2, **SMALL)
    )
    (second,), _ = run_pipeline(demo_pipe, GenerationRequest(prompt="x", seed=41, **SMALL))
    assert images[1].tobytes() == second.tobytes()
    assert images[0].tobytes() != images[1].tobytes()


def test_empty_prompt_generates(demo_pipe):
    """An empty prompt is allowed and gives an image of the requested size."""
    (image,), _ = run_pipeline(demo_pipe, GenerationRequest(prompt="", seed=1, **SMALL))
    assert image.size == (512, 512)


def test_runs_under_inference_mode(demo_pipe):
    """Every denoising step runs with torch's inference mode on."""
    seen = []
    run_pipeline(
        demo_pipe,
        GenerationRequest(seed=1, **SMALL),
        on_progress=lambda p: seen.append((p.phase, torch.is_inference_mode_enabled())),
    )
    assert [on for phase, on in seen if phase == "denoising"] == [True, True]


def test_progress_reports_each_step(demo_pipe):
    """The progress callback sees step i/N for every step of every image."""
    steps = []
    run_pipeline(
        demo_pipe,
        GenerationRequest(seed=1, num_images=2, **SMALL),
        on_progress=lambda p: steps.append((p.phase, p.image_index, p.step, p.total_steps)),
    )
    denoising = [s[1:] for s in steps if s[0] == "denoising"]
    assert denoising == [(0, 1, 2), (0, 2, 2), (1, 1, 2), (1, 2, 2)]


def test_stop_interrupts_within_one_step_and_the_next_run_is_clean(demo_pipe):
    """Stop after step 1 ends the run at once; the next run equals a fresh one."""
    request = GenerationRequest(
        prompt="a fox", seed=9, width=512, height=512, num_inference_steps=6
    )
    steps = []
    with pytest.raises(GenerationStopped) as info:
        run_pipeline(
            demo_pipe,
            request,
            on_progress=lambda p: steps.append(p.step) if p.phase == "denoising" else None,
            should_stop=lambda: len(steps) >= 1,
        )
    assert steps == [1]
    assert info.value.step == 2
    (after,), _ = run_pipeline(demo_pipe, request)
    (fresh,), _ = run_pipeline(demo_pipe, request)
    assert after.tobytes() == fresh.tobytes()


def test_two_threads_on_one_backend_match_their_single_runs():
    """Two sessions generating at once each get exactly their single-thread image."""
    backend = LocalBackend(model="demo", dtype="float32")
    requests = [GenerationRequest(prompt=p, seed=s, **SMALL) for p, s in (("a", 1), ("b", 2))]
    expected = [backend.generate(r).images[0].tobytes() for r in requests]
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        results[i] = backend.generate(requests[i]).images[0].tobytes()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[0], results[1]] == expected
    assert backend.load_count == 1


def test_waiting_session_sees_its_queue_position():
    """A generation that waits for the pipeline reports how many are ahead of it."""
    backend = LocalBackend(model="demo", dtype="float32")
    backend.ensure_loaded()
    positions = []
    with backend.queue.slot():  # another session holds the pipeline
        worker = threading.Thread(
            target=backend.generate,
            args=(GenerationRequest(seed=1, **SMALL),),
            kwargs={"on_progress": lambda p: p.phase == "queued" and positions.append(p)},
        )
        worker.start()
        while not positions:
            worker.join(0.05)
    worker.join()
    assert positions[0].queue_position == 1
    assert not backend.queue.busy


def test_model_loads_once_for_concurrent_first_clicks():
    """Two sessions clicking Generate during the first load share one load."""
    calls = []

    def counting_loader(**kwargs):
        calls.append(kwargs)
        return load_pipeline(**kwargs)

    backend = LocalBackend(model="demo", dtype="float32", loader=counting_loader)
    futures = [backend.load_async() for _ in range(3)]
    assert {id(f.result()) for f in futures} == {id(backend.loaded)}
    assert len(calls) == 1


def test_failed_load_is_not_cached_and_retry_works(tmp_path):
    """A load that fails is forgotten: once the folder exists, the next click loads."""
    from core.demo import save_demo_pipeline

    folder = tmp_path / "later"
    backend = LocalBackend(model=str(folder), dtype="float32")
    with pytest.raises(GenerationError, match="does not exist"):
        backend.ensure_loaded()
    assert backend.state == "not loaded"
    save_demo_pipeline(folder)
    assert backend.generate(GenerationRequest(seed=1, **SMALL)).images[0].size == (512, 512)


def test_out_of_memory_becomes_a_message_and_the_next_run_works():
    """An OOM mid-run frees memory, says what to change, and leaves the engine usable."""
    state = {"fail": True}

    def flaky_loader(**kwargs):
        loaded = load_pipeline(**kwargs)
        real_transformer_forward = loaded.pipe.transformer.forward

        def forward(*args, **kw):
            if state["fail"]:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return real_transformer_forward(*args, **kw)

        loaded.pipe.transformer.forward = forward
        return loaded

    backend = LocalBackend(model="demo", dtype="float32", loader=flaky_loader)
    request = GenerationRequest(seed=1, **SMALL)
    with pytest.raises(GenerationError, match="smaller size"):
        backend.generate(request)
    assert not backend.queue.busy
    state["fail"] = False
    assert backend.generate(request).images[0].size == (512, 512)


def test_sd_compile_wraps_the_real_transformer(demo_dir, monkeypatch, fresh_cache):
    """SD_COMPILE=on reaches the loader: the transformer's blocks run through torch.compile
    (on the CPU too: the setting wins over auto's CUDA-only default)."""
    from core.service import get_backend
    from core.settings import load_settings

    monkeypatch.setenv("SD_MODEL", str(demo_dir))
    monkeypatch.setenv("SD_COMPILE", "on")
    settings = load_settings()
    assert settings.compile == "true"
    loaded = get_backend(settings).ensure_loaded()
    assert loaded.compiled
    plain = load_pipeline(model=str(demo_dir), device="cpu", dtype="float32")
    assert not plain.compiled


def test_sd_compile_rejects_unknown_words(monkeypatch):
    """SD_COMPILE=maybe is refused with the accepted words."""
    from core.settings import SettingsError, load_settings

    monkeypatch.setenv("SD_COMPILE", "maybe")
    with pytest.raises(SettingsError, match="SD_COMPILE"):
        load_settings()
