"""The memory plan chooser, the memory settings, and the plan applied by the real loader."""

from __future__ import annotations

import threading

import pytest

from core.generation import GenerationError, GenerationRequest
from core.local import LocalBackend, load_pipeline, run_pipeline
from core.memory import GB, MemoryOptions, choose_memory_plan, component_bytes, plan_for
from core.settings import SettingsError, load_settings
from tests.conftest import SMALL

# free VRAM (GB or None), free RAM (GB), device, dtype, forced offload, forced drop_t5
#   → verdict, offload, drop_t5
CASES = [
    (
        "cpu, 24 GB RAM: everything fits",
        None,
        24,
        "cpu",
        "bfloat16",
        None,
        None,
        "fits",
        "none",
        False,
    ),
    (
        "cpu, 12 GB RAM: T5 must go",
        None,
        12,
        "cpu",
        "bfloat16",
        None,
        None,
        "needs drop-T5",
        "none",
        True,
    ),
    (
        "cpu, 8 GB RAM: nothing fits",
        None,
        8,
        "cpu",
        "bfloat16",
        None,
        None,
        "won't fit",
        "none",
        True,
    ),
    (
        "cpu float32 doubles the weights",
        None,
        24,
        "cpu",
        "float32",
        None,
        None,
        "needs drop-T5",
        "none",
        True,
    ),
    (
        "apple GPU budgets unified RAM",
        None,
        24,
        "mps",
        "float16",
        None,
        None,
        "fits",
        "none",
        False,
    ),
    ("80 GB GPU: all on the GPU", 80, 32, "cuda", "bfloat16", None, None, "fits", "none", False),
    (
        "16 GB GPU: model offload keeps T5",
        16,
        32,
        "cuda",
        "bfloat16",
        None,
        None,
        "needs offload",
        "model",
        False,
    ),
    (
        "10 GB GPU: T5 is the largest part, drop it",
        10,
        32,
        "cuda",
        "bfloat16",
        None,
        None,
        "needs drop-T5",
        "none",
        True,
    ),
    (
        "8 GB GPU: drop T5 and offload",
        8,
        32,
        "cuda",
        "bfloat16",
        None,
        None,
        "needs drop-T5",
        "model",
        True,
    ),
    (
        "4 GB GPU: sequential offload",
        4,
        32,
        "cuda",
        "bfloat16",
        None,
        None,
        "needs offload",
        "sequential",
        False,
    ),
    (
        "4 GB GPU, 8 GB RAM: sequential without T5",
        4,
        8,
        "cuda",
        "bfloat16",
        None,
        None,
        "needs drop-T5",
        "sequential",
        True,
    ),
    (
        "1 GB GPU: nothing fits",
        1,
        64,
        "cuda",
        "bfloat16",
        None,
        None,
        "won't fit",
        "sequential",
        True,
    ),
    (
        "unknown free VRAM: try the GPU",
        None,
        32,
        "cuda",
        "bfloat16",
        None,
        None,
        "fits",
        "none",
        False,
    ),
    (
        "SD_OFFLOAD=model wins on a big GPU",
        80,
        32,
        "cuda",
        "bfloat16",
        "model",
        None,
        "fits",
        "model",
        False,
    ),
    (
        "SD_DROP_T5=false forbids dropping T5",
        10,
        32,
        "cuda",
        "bfloat16",
        None,
        False,
        "needs offload",
        "sequential",
        False,
    ),
    (
        "SD_DROP_T5=true on a roomy CPU",
        None,
        24,
        "cpu",
        "bfloat16",
        None,
        True,
        "fits",
        "none",
        True,
    ),
    (
        "offload on a CPU is refused",
        None,
        64,
        "cpu",
        "bfloat16",
        "model",
        None,
        "refused",
        "model",
        False,
    ),
]


@pytest.mark.parametrize(
    ("vram", "ram", "device", "dtype", "offload", "drop", "verdict", "plan", "dropped"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_plan_table(vram, ram, device, dtype, offload, drop, verdict, plan, dropped):
    """The chooser picks the expected verdict, offload and T5 choice for each memory case."""
    result = choose_memory_plan(
        None if vram is None else vram * GB,
        ram * GB,
        device=device,
        dtype=dtype,
        offload=offload,
        drop_t5=drop,
        vae_tile=512,
    )
    assert (result.verdict, result.offload, result.drop_t5) == (verdict, plan, dropped)
    assert result.vae_tile == 512


def test_plan_reason_has_the_numbers():
    """The reason shows the weights, working memory and free memory it compared."""
    plan = choose_memory_plan(None, 24 * GB, device="cpu", dtype="bfloat16")
    assert "16.3 GB of bfloat16 weights" in plan.reason
    assert "= 18.6 GB ≤ 24.0 GB free RAM" in plan.reason
    assert plan.needed_bytes == int(18.57 * GB)


# Peak RSS measured on the full-size random-weight stand-in (CPU, bf16; issue 13).
MEASURED_PEAK_GB = {False: 16.9, True: 7.97}  # keyed by drop-T5


@pytest.mark.parametrize("drop", [False, True], ids=["with T5", "without T5"])
def test_plan_is_calibrated_on_the_safe_side(drop):
    """The predicted need stays above the measured peak, by less than the old 2.4–1.8 GB."""
    plan = choose_memory_plan(None, 64 * GB, device="cpu", dtype="bfloat16", drop_t5=drop)
    margin = plan.needed_bytes / GB - MEASURED_PEAK_GB[drop]
    assert 0.5 < margin < 1.8


def test_default_load_plan_is_the_apps_default():
    """load_pipeline without `memory` plans as the app does with no settings (SD_MEMORY=auto)."""
    from core.settings import Settings

    assert MemoryOptions() == MemoryOptions.from_settings(Settings())
    assert MemoryOptions().memory == "auto"


def test_drop_t5_reason_says_what_is_lost():
    """A plan without T5 tells the user that prompts lose T5 conditioning."""
    plan = choose_memory_plan(10 * GB, 32 * GB, device="cuda", dtype="bfloat16")
    assert "lose T5 conditioning" in plan.reason


def test_manual_mode_takes_settings_as_set():
    """SD_MEMORY=manual ignores free memory and uses SD_OFFLOAD / SD_DROP_T5 as given."""
    options = MemoryOptions(memory="manual", offload="model", drop_t5=True, vae_tile=256)
    plan = plan_for(options, device="cuda", dtype="bfloat16", free_vram_bytes=1, free_ram_bytes=1)
    assert (plan.offload, plan.drop_t5, plan.vae_tile, plan.verdict) == (
        "model",
        True,
        256,
        "fits",
    )


def test_memory_settings_parse():
    """SD_MEMORY, SD_OFFLOAD, SD_DROP_T5 and SD_VAE_TILE are read and typed."""
    env = {"SD_MEMORY": "Manual", "SD_OFFLOAD": "sequential", "SD_DROP_T5": "yes"}
    settings = load_settings(environ={**env, "SD_VAE_TILE": "256"}, secrets={})
    assert (settings.memory, settings.offload, settings.drop_t5, settings.vae_tile) == (
        "manual",
        "sequential",
        True,
        256,
    )
    defaults = load_settings(environ={}, secrets={})
    assert (defaults.memory, defaults.offload, defaults.drop_t5, defaults.vae_tile) == (
        "auto",
        None,
        None,
        "auto",  # issue 20: tiles only when an untiled decode would not fit
    )
    assert (defaults.quant, defaults.compile) == ("auto", "auto")
    assert load_settings(environ={"SD_VAE_TILE": "AUTO"}, secrets={}).vae_tile == "auto"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SD_VAE_TILE", "500"),
        ("SD_VAE_TILE", "big"),
        ("SD_OFFLOAD", "gpu"),
        ("SD_DROP_T5", "?"),
        ("SD_QUANT", "int4"),
        ("SD_COMPILE", "sometimes"),
    ],
)
def test_bad_memory_setting_names_the_fix(name, value):
    """A memory setting with an unusable value raises SettingsError naming the setting."""
    with pytest.raises(SettingsError, match=name):
        load_settings(environ={name: value}, secrets={})


@pytest.mark.parametrize("offload", ["model", "sequential"])
@pytest.mark.parametrize("memory", ["auto", "manual"])
def test_offload_on_cpu_is_refused(offload, memory):
    """SD_OFFLOAD on a CPU-only machine is refused with the fix, before any weight loads."""
    options = MemoryOptions(memory=memory, offload=offload)
    with pytest.raises(GenerationError) as err:
        load_pipeline(model="demo", device="cpu", dtype="float32", memory=options)
    assert f"SD_OFFLOAD={offload}" in str(err.value)
    assert "Set SD_OFFLOAD=none" in str(err.value)


def _image_bytes(pipe, prompt="a red fox on a long winding mountain road"):
    request = GenerationRequest(prompt=prompt, seed=3, **SMALL)
    images, _ = run_pipeline(pipe, request)
    return images[0].tobytes()


def test_drop_t5_loads_without_t5_and_generates(demo_dir):
    """SD_DROP_T5 loads the saved pipeline without T5, and it still makes an image."""
    plain = load_pipeline(model=str(demo_dir), device="cpu", dtype="float32")
    dropped = load_pipeline(
        model=str(demo_dir),
        device="cpu",
        dtype="float32",
        memory=MemoryOptions(memory="manual", drop_t5=True),
    )
    assert dropped.pipe.text_encoder_3 is None and dropped.pipe.tokenizer_3 is None
    assert plain.pipe.text_encoder_3 is not None
    assert dropped.plan.drop_t5 is True
    assert dropped.held_bytes < plain.held_bytes
    image = _image_bytes(dropped.pipe)
    assert len(image) == 512 * 512 * 3
    assert image != _image_bytes(plain.pipe)  # T5's conditioning is really gone


def test_vae_tile_is_in_force(demo_dir, monkeypatch):
    """The configured tile is set on the loaded VAE and really tiles a 512-pixel decode."""
    loaded = load_pipeline(
        model=str(demo_dir),
        device="cpu",
        dtype="float32",
        memory=MemoryOptions(memory="manual", vae_tile=256),
    )
    vae = loaded.pipe.vae
    assert (vae.use_slicing, vae.use_tiling) == (True, True)
    assert (vae.tile_sample_min_size, vae.tile_latent_min_size) == (256, 32)
    assert loaded.vae_state["tile_px"] == 256 and loaded.vae_state["tiling"] is True
    tiled = []
    original = vae.tiled_decode

    def counting_tiled_decode(*args, **kwargs):
        tiled.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(vae, "tiled_decode", counting_tiled_decode)
    _image_bytes(loaded.pipe)
    assert tiled, "a 512-pixel image with 256-pixel tiles must go through tiled_decode"


def test_vae_tile_zero_turns_tiling_off():
    """SD_VAE_TILE=0 leaves the VAE untiled (slicing stays on)."""
    loaded = load_pipeline(
        model="demo", device="cpu", dtype="float32", memory=MemoryOptions(vae_tile=0)
    )
    assert loaded.vae_state["tiling"] is False and loaded.vae_state["slicing"] is True


def test_unload_then_generate_is_identical():
    """After unload the backend is not loaded; the next generation reloads, same bytes."""
    backend = LocalBackend(model="demo", device="cpu", dtype="float32")
    request = GenerationRequest(prompt="a lighthouse", seed=11, **SMALL)
    first = backend.generate(request).images[0].tobytes()
    assert backend.unload() is True
    assert backend.state == "not loaded" and backend.loaded is None
    assert backend.unload() is False
    again = backend.generate(request)
    assert backend.state == "loaded"
    assert again.load_seconds > 0
    assert again.images[0].tobytes() == first


def test_unload_waits_for_the_generation_lock():
    """Unload does not drop the pipeline while a generation holds the lock."""
    backend = LocalBackend(model="demo", device="cpu", dtype="float32")
    backend.ensure_loaded()
    done = threading.Event()
    worker = threading.Thread(target=lambda: (backend.unload(), done.set()))
    with backend.queue.slot():
        worker.start()
        assert not done.wait(0.5)
        assert backend.state == "loaded"
    worker.join(timeout=30)
    assert done.is_set() and backend.state == "not loaded"


def test_backend_passes_memory_options_to_the_loader():
    """A backend built with memory options loads with that plan."""
    backend = LocalBackend(
        model="demo", device="cpu", dtype="float32", memory=MemoryOptions(drop_t5=True)
    )
    loaded = backend.ensure_loaded()
    assert loaded.plan.drop_t5 is True and loaded.pipe.text_encoder_3 is None


def test_generation_queued_behind_unload_reloads():
    """A generation waiting while an unload runs loads the model again and still works."""
    backend = LocalBackend(model="demo", device="cpu", dtype="float32")
    request = GenerationRequest(prompt="a lighthouse", seed=11, **SMALL)
    expected = backend.generate(request).images[0].tobytes()
    results = []
    unloader = threading.Thread(target=backend.unload)
    generator = threading.Thread(target=lambda: results.append(backend.generate(request)))
    with backend.queue.slot():
        unloader.start()
        while backend.queue.waiting < 1:  # the unload is queued first
            threading.Event().wait(0.01)
        generator.start()
        while backend.queue.waiting < 2:
            threading.Event().wait(0.01)
    unloader.join(timeout=60)
    generator.join(timeout=120)
    assert backend.state == "loaded"
    assert results and results[0].images[0].tobytes() == expected


@pytest.mark.gpu
@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="model/sequential offload need CUDA"
)
@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_on_gpu_generates_like_without(offload):
    """On a CUDA GPU, offloaded pipelines make the same image as one held on the GPU."""
    plain = load_pipeline(model="demo", device="cuda", dtype="float32")
    offloaded = load_pipeline(
        model="demo",
        device="cuda",
        dtype="float32",
        memory=MemoryOptions(memory="manual", offload=offload),
    )
    assert offloaded.plan.offload == offload
    assert _image_bytes(offloaded.pipe) == _image_bytes(plain.pipe)
    backend = LocalBackend(
        model="demo", device="cuda", dtype="float32", memory=MemoryOptions(offload=offload)
    )
    backend.ensure_loaded()
    assert backend.unload() is True and backend.state == "not loaded"


# --- issue 20: the app's planner is the quantized one ----------------------------------------
def _auto(vram_gb, ram_gb, *, device="cuda", capability=(9, 0), **options):
    from core.memory import default_machine

    return plan_for(
        MemoryOptions(**options),
        device=device,
        dtype="bfloat16",
        free_vram_bytes=None if vram_gb is None else int(vram_gb * GB),
        free_ram_bytes=int(ram_gb * GB),
        machine=default_machine(device, "bfloat16", capability=capability),
    )


@pytest.mark.parametrize(
    ("vram", "capability", "chosen", "verdict", "quant"),
    [
        (140, (9, 0), "as is", "fits", ()),
        (14, (9, 0), "T5 int8", "needs quantization", (("text_encoder_3", "int8"),)),
        (8, (9, 0), "T5 int8 + model offload", "needs quantization", (("text_encoder_3", "int8"),)),
        (4.5, (9, 0), "drop T5 + transformer fp8 + model offload", "needs drop-T5",
         (("transformer", "fp8"),)),
        (4.5, (8, 6), "drop T5 + transformer int8 + model offload", "needs drop-T5",
         (("transformer", "int8"),)),
        (3, (9, 0), "sequential offload", "needs offload", ()),
    ],
)  # fmt: skip
def test_app_plan_is_the_quantized_ladder(vram, capability, chosen, verdict, quant):
    """SD_QUANT=auto (the default) walks the quantized ladder; float8 needs capability ≥ 8.9."""
    plan = _auto(vram, 64, capability=capability)
    assert (plan.chosen, plan.verdict, plan.quant) == (chosen, verdict, quant)
    assert plan.candidates[0].name == "as is" and len(plan.candidates) == 9
    assert plan.needed_bytes == next(c.peak_bytes for c in plan.candidates if c.name == chosen)


def test_app_plan_when_nothing_fits_shows_the_closest():
    """Nothing fits a 1 GB card: the verdict says so and the plan shown is the last tried."""
    plan = _auto(1, 64)
    assert (plan.verdict, plan.chosen, plan.offload, plan.drop_t5) == (
        "won't fit",
        "",
        "sequential",
        True,
    )


def test_sd_quant_forces_and_refuses(demo_dir):
    """SD_QUANT=int8 keeps only int8 plans; fp8 on a CPU is refused, and the loader says
    why before anything loads; SD_MEMORY=manual applies SD_QUANT as set."""
    forced = _auto(140, 64, quant="int8")
    assert forced.quant == (("text_encoder_3", "int8"), ("transformer", "int8"))
    refused = _auto(None, 64, device="cpu", quant="fp8")
    assert refused.verdict == "refused" and "needs a CUDA GPU" in refused.reason
    with pytest.raises(GenerationError, match="SD_QUANT=fp8 needs a CUDA GPU"):
        load_pipeline(model="demo", device="cpu", memory=MemoryOptions(quant="fp8"))
    manual = _auto(1, 1, memory="manual", quant="t5-int8", offload="model")
    assert (manual.verdict, manual.offload, manual.quant) == (
        "fits",
        "model",
        (("text_encoder_3", "int8"),),
    )
    assert "SD_QUANT as set" in manual.reason


def test_family_shares_size_the_quantized_plans():
    """SD3.5 Large's transformer shrinks by its own Linear share (0.9886), not Medium's."""
    from core.models import SD35_LARGE
    from core.quant_plan import quantized_bytes

    plan = plan_for(
        MemoryOptions(),
        device="cuda",
        dtype="bfloat16",
        free_vram_bytes=140 * GB,
        free_ram_bytes=64 * GB,
        components=component_bytes("bfloat16", SD35_LARGE),
        family=SD35_LARGE,
    )
    both = next(c for c in plan.candidates if c.name == "T5 int8 + transformer int8")
    expected = quantized_bytes(int(16.29 * GB), "int8", dtype="bfloat16", share=0.9886)
    assert both.parts["transformer"] == expected


@pytest.mark.parametrize(("free_gb", "tiled"), [(16, False), (4, True)])
def test_vae_tile_auto_decides_at_load(free_gb, tiled, monkeypatch):
    """SD_VAE_TILE=auto (the default): the demo's VAE is untiled with room for an untiled
    1440² decode beside its weights, tiled (512 px) without; the plan says why."""
    import core.hardware

    monkeypatch.setattr(core.hardware, "free_memory", lambda device: (None, int(free_gb * GB)))
    loaded = load_pipeline(model="demo", device="cpu", dtype="float32")
    assert loaded.pipe.vae.use_tiling is tiled
    assert loaded.plan.vae_tile == (512 if tiled else 0)
    assert loaded.plan.vae_reason.startswith("512-px tiles" if tiled else "untiled")
