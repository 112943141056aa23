"""Encode once per request, the embedding cache, the phases of a generation, the estimates."""

import pytest
import torch

from core.demo import build_demo_pipeline
from core.estimate import SPEEDS, SpeedLog, describe_estimate
from core.generation import GenerationRequest, Progress
from core.local import LocalBackend, apply_memory_options, run_pipeline, vae_tiles
from core.progress_text import progress_text
from core.prompt_cache import PromptCache
from tests.conftest import SMALL


@pytest.fixture(name="pipe")
def fixture_pipe():
    """A fresh tiny pipeline counting its prompt encodings (T5 forward passes, CFG off)."""
    pipe = build_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.t5_calls = 0

    def count(*_args):
        pipe.t5_calls += 1

    pipe.text_encoder_3.register_forward_hook(count)
    return pipe


def encodes(pipe, guidance=4.5):
    """Prompt encodings so far: T5 runs twice per encoding with CFG (prompt and negative)."""
    return pipe.t5_calls // (2 if guidance > 1 else 1)


def direct(pipe, request):
    """Today's call, straight into diffusers: prompt text, one call per seed."""
    images = []
    for seed in request.seeds:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with torch.inference_mode():
            images.append(pipe(**request.pipeline_kwargs(), generator=generator).images[0])
    return [image.tobytes() for image in images]


@pytest.mark.parametrize("guidance", [4.5, 1.0], ids=["CFG on, with a negative prompt", "CFG off"])
def test_same_pixels_with_and_without_the_cache_and_as_diffusers(pipe, guidance):
    """Encode-once, a cache miss and a cache hit give the bytes of a direct diffusers call."""
    request = GenerationRequest(
        prompt="a red fox", negative_prompt="blurry", seed=3, num_images=2,
        guidance_scale=guidance, **SMALL,
    )  # fmt: skip
    expected = direct(pipe, request)
    cache = PromptCache()
    no_cache, _ = run_pipeline(pipe, request)
    miss, _ = run_pipeline(pipe, request, cache=cache)
    hit, _ = run_pipeline(pipe, request, cache=cache)
    for images in (no_cache, miss, hit):
        assert [image.tobytes() for image in images] == expected
    assert (cache.misses, cache.hits) == (1, 1)


def test_prompt_is_encoded_once_per_request(pipe):
    """Two seeds, one encoding (the direct diffusers call encodes once per seed)."""
    request = GenerationRequest(prompt="x", num_images=2, **SMALL)
    run_pipeline(pipe, request)
    assert encodes(pipe) == 1
    direct(pipe, request)
    assert encodes(pipe) == 1 + 2


def test_cache_key_holds_everything_that_changes_the_embeddings(pipe):
    """Prompt, negative prompt and CFG make new entries; a negative without CFG does not."""
    cache = PromptCache()

    def run(**fields):
        run_pipeline(pipe, GenerationRequest(**{**SMALL, **fields}), cache=cache)
        return pipe.t5_calls

    assert run(prompt="fox", seed=1) == 2  # prompt and negative: two T5 passes
    assert run(prompt="fox", seed=2) == 2  # another seed: same embeddings
    assert run(prompt="fox", negative_prompt="blur") == 4
    assert run(prompt="wolf") == 6
    assert run(prompt="fox", guidance_scale=1.0) == 7  # CFG off: no negative embeddings
    assert run(prompt="fox", guidance_scale=1.0, negative_prompt="ignored") == 7


def test_cache_keeps_only_the_last_few():
    """The LRU holds MAX_ENTRIES prompts and drops the least recently used."""
    cache = PromptCache(max_entries=2)
    cache.put("a", {"x": 1})
    cache.put("b", {"x": 2})
    assert cache.get("a") == {"x": 1}  # a is now the most recent
    cache.put("c", {"x": 3})
    assert cache.get("b") is None
    assert len(cache) == 2


def test_backend_reuses_embeddings_across_requests_and_unload_drops_them():
    """Two clicks with one prompt encode once; unloading empties the cache."""
    backend = LocalBackend(model="demo", dtype="float32")
    first = backend.generate(GenerationRequest(prompt="fox", seed=1, **SMALL))
    second = backend.generate(GenerationRequest(prompt="fox", seed=1, **SMALL))
    assert first.images[0].tobytes() == second.images[0].tobytes()
    assert (backend.prompt_cache.misses, backend.prompt_cache.hits) == (1, 1)
    backend.unload()
    assert len(backend.prompt_cache) == 0


def test_phases_in_order_with_tile_count():
    """encoding → step k/n → decoding (with tiles) per image, each with its own label."""
    pipe = build_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    apply_memory_options(pipe, vae_tile=256)  # 256-px tiles make a 512² image tile
    request = GenerationRequest(prompt="x", num_images=2, **SMALL)
    seen: list[Progress] = []
    run_pipeline(pipe, request, on_progress=seen.append)
    phases = [(p.phase, p.image_index, p.step) for p in seen]
    assert phases == [
        ("encoding", 0, 0),
        ("denoising", 0, 1), ("denoising", 0, 2), ("decoding", 0, 2),
        ("denoising", 1, 1), ("denoising", 1, 2), ("decoding", 1, 2),
    ]  # fmt: skip
    decoding = seen[3]
    assert decoding.tiles == vae_tiles(pipe, 512, 512) == 9  # 64 latents, 24-latent stride
    labels = [progress_text(p) for p in seen]
    assert labels[0].startswith("Encoding the prompt")
    assert labels[1].startswith("Image 1/2 · step 1/2")
    assert labels[3].startswith("Image 1/2 · Decoding the image in 9 tiles")
    assert progress_text(Progress("saving", 0.0)) == "Saving to the seed history…"
    apply_memory_options(pipe, vae_tile=512)
    assert vae_tiles(pipe, 512, 512) == 0  # one tile: untiled
    assert vae_tiles(pipe, 1024, 1024) == 9  # SD3.5's default size with the default tile


def test_estimate_before_the_first_image_is_the_stand_ins_figure():
    """On a CPU, 1024², 40 steps reads ≈ 35 min before anything ran here."""
    log = SpeedLog()
    estimate = log.estimate(
        model="stabilityai/stable-diffusion-3.5-medium", device="cpu",
        width=1024, height=1024, steps=40, images=1,
    )  # fmt: skip
    assert not estimate.measured and estimate.worth_a_draft
    text = describe_estimate(estimate, width=1024, height=1024, steps=40)
    assert text.startswith("≈ 35 min at 1024², 40 steps on this CPU")
    demo = log.estimate(model="demo", device="cpu", width=512, height=512, steps=2, images=1)
    assert demo is None  # the tiny demo: nothing to say before it ran


def test_generations_record_their_speed():
    """After a generation the estimate is measured, and scales with steps and images."""
    SPEEDS.clear()
    backend = LocalBackend(model="demo", dtype="float32")
    backend.generate(GenerationRequest(prompt="fox", **SMALL))
    one = SPEEDS.estimate(model="demo", device="cpu", width=512, height=512, steps=2, images=1)
    four = SPEEDS.estimate(model="demo", device="cpu", width=512, height=512, steps=2, images=4)
    many = SPEEDS.estimate(model="demo", device="cpu", width=512, height=512, steps=40, images=1)
    assert one.measured and 0 < one.seconds < four.seconds and one.seconds < many.seconds
    big = SPEEDS.estimate(model="demo", device="cpu", width=1024, height=1024, steps=2, images=1)
    assert big.seconds > one.seconds
    SPEEDS.clear()
