"""The Hardware page under AppTest: facts, plan, load/unload, and no token on screen."""

from __future__ import annotations

from types import SimpleNamespace

from core.memory import GB
from core.service import get_backend
from tests.conftest import APP_ROOT

TOKEN = "hf_SECRETtoken123"
PAGE = "pages/hardware.py"


def _texts(at) -> list[str]:
    """Every element's protobuf as text: values, labels, bodies, help and captions."""
    found = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            found.append(str(proto))
        for attr in ("value", "label", "body", "help"):
            value = getattr(node, attr, None)
            if isinstance(value, str):
                found.append(value)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return found


def _markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_page_not_loaded_shows_facts_and_plan(app):
    """Before any load the page shows the state, device reasons, CPU, plan and chart."""
    at = app(PAGE)
    assert not at.exception
    text = _markdown(at)
    assert "**State:** not loaded" in text
    assert "**Device:** cpu" in text or "**Device:** cuda" in text
    assert "**Native bfloat16:**" in text and "**RAM:**" in text
    assert "**torch:**" in text and "**Token configured:** no" in text
    assert any("**fits**" in info.value for info in at.info)
    assert any("SD3.5 Medium here:" in e.value for e in [*at.info, *at.error])
    bars = [p.proto.text for p in at.get("progress")]
    assert any(b.startswith("RAM: ") and "the plan needs" in b for b in bars), bars
    assert not at.get("vega_lite_chart")


def test_load_and_unload_buttons(app, monkeypatch):
    """Load model now loads the pipeline and shows its plan; Unload drops it again. With
    16 GB of RAM free, SD_VAE_TILE=auto leaves the demo's VAE untiled and says why."""
    import psutil

    ram = SimpleNamespace(total=32 * GB, available=16 * GB, percent=50.0)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: ram)
    at = app(PAGE)
    at.button(key="load_model").click().run()
    assert not at.exception
    text = _markdown(at)
    assert "**State:** loaded" in text
    assert "**VAE tiling:** off" in text
    assert "**VAE:** untiled: a 1440×1440 decode needs" in text
    assert "**VAE slicing:** on" in text
    assert "**Memory plan:** offload none · with T5 · VAE untiled" in text
    assert "**Quantization:** none" in text
    assert "**Memory held by the weights:** ≈" in text
    assert any(i.value.startswith("In force (chosen at load): **fits**") for i in at.info)
    assert get_backend().state == "loaded"

    at.button(key="unload_model").click().run()
    assert not at.exception
    assert "**State:** not loaded" in _markdown(at)
    assert get_backend().state == "not loaded"
    assert at.success[0].value.startswith("Model unloaded")


def test_page_shows_dropped_t5(app, monkeypatch):
    """With SD_DROP_T5 the loaded pipeline says T5 is not loaded and what that costs."""
    monkeypatch.setenv("SD_DROP_T5", "true")
    at = app(PAGE)
    at.button(key="load_model").click().run()
    assert not at.exception
    assert "**T5:** not loaded: prompts lose T5 conditioning" in _markdown(at)


def test_bad_memory_setting_is_an_error(app, monkeypatch):
    """An invalid SD_VAE_TILE shows the settings error instead of crashing."""
    monkeypatch.setenv("SD_VAE_TILE", "100")
    at = app(PAGE)
    assert not at.exception
    assert any("SD_VAE_TILE" in e.value for e in at.error)


def test_token_never_rendered(app, monkeypatch):
    """With HF_TOKEN set the page says so, but no part of the token appears anywhere."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    at = app(PAGE)
    at.button(key="load_model").click().run()
    assert not at.exception
    assert "**Token configured:** yes" in _markdown(at)
    everything = "\n".join(_texts(at))
    assert "Token configured" in everything  # the walk really reaches the page's text
    for cut in range(4, len(TOKEN) + 1):
        assert TOKEN[:cut] not in everything, f"token prefix {TOKEN[:cut]!r} rendered"
    assert "SECRET" not in everything


def test_page_with_fake_gpu(app, monkeypatch):
    """With a (faked) CUDA GPU the page lists it, its VRAM, and a plan judged on VRAM."""
    import torch

    from tests.test_hardware import FakeCuda, FakeGpu

    FakeCuda(FakeGpu("NVIDIA GeForce RTX 4090", (8, 9), 24 * GB, 20 * GB, GB)).install(monkeypatch)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    at = app(PAGE)
    assert not at.exception
    text = _markdown(at)
    assert "**GPU 0:** NVIDIA GeForce RTX 4090 (compute capability 8.9)" in text
    assert "**VRAM:** 20.0 GB free of 24.0 GB" in text
    assert "**Held by this app:** 1.0 GB" in text
    assert "**Device:** cuda (auto: CUDA GPU available)" in text
    # Issue 20: compiled by default on CUDA; every SD3.5 candidate listed, float8 on 8.9.
    assert "**Compile:** on at the next load (SD_COMPILE=auto on CUDA" in text
    plans = at.table[0].value
    assert "T5 int8 + transformer fp8" in set(plans["Plan"])
    assert plans.loc[plans[""] == "▶", "Plan"].item() == "as is"  # 17.8 GB ≤ 20 GB free
    assert any("SD3.5 Medium here: **fits**" in e.value and "VRAM" in e.value for e in at.info)


def test_generator_warns_when_t5_was_left_out(app, monkeypatch):
    """After a load without T5, the generator page says prompts lose T5 conditioning."""
    monkeypatch.setenv("SD_DROP_T5", "true")
    at = app("pages/hardware.py")
    at.button(key="load_model").click().run()
    at.switch_page("pages/generate.py").run()
    assert any("without T5-XXL" in w.value for w in at.warning)


def test_page_shows_torch_compile_state(app, monkeypatch):
    """With SD_COMPILE on, the loaded pipeline's torch.compile state reads "on", the first
    image still to compile, with the cache folder under SD_DATA_DIR; by default (auto) a CPU
    does not compile, and the page says why before and after loading."""
    at = app("pages/hardware.py")
    assert "**Compile:** off at the next load (SD_COMPILE=auto: compiling pays on CUDA only" in (
        _markdown(at)
    )
    monkeypatch.setenv("SD_COMPILE", "true")
    at = app("pages/hardware.py")
    at.button(key="load_model").click().run()
    assert not at.exception
    text = _markdown(at)
    assert "**torch.compile:** on, each transformer block: first image compiling" in text
    assert "**Compile cache:**" in text and "torch-compile" in text


def test_refused_quantization_is_said_before_loading(app, monkeypatch):
    """SD_QUANT=fp8 on a CPU: the plan is refused with the reason, and no candidate table."""
    monkeypatch.setenv("SD_QUANT", "fp8")
    at = app(PAGE)
    assert not at.exception
    refused = [e.value for e in at.error if "**refused**" in e.value]
    assert refused and all("SD_QUANT=fp8 needs a CUDA GPU" in e for e in refused)
    assert len(at.table) == 0


def test_plan_boxes_use_material_icons(app):
    """The memory-plan boxes carry Streamlit's bundled Material icons, which need no emoji
    font (an emoji icon is an empty box on a machine without one)."""
    at = app(PAGE)
    boxes = [b for b in [*at.info, *at.error] if "**fits**" in b.value or "fit**" in b.value]
    assert boxes
    assert all(b.icon.startswith(":material/") for b in boxes), [b.icon for b in boxes]


def test_no_emoji_in_the_app_code():
    """No emoji anywhere in the app's pages, ui and core: icons are `:material/…:` names.
    (The check and cross marks ✓ ✗ in table cells are text that ordinary fonts carry.)"""
    import re

    emoji = re.compile(
        "[\U0001f300-\U0001faff\u2600-\u2712\u2714-\u2716\u2718-\u27bf\u2b00-\u2bff\ufe0f]"
    )
    found = [
        f"{path.relative_to(APP_ROOT)}:{number}"
        for folder in ("pages", "ui", "core")
        for path in (APP_ROOT / folder).rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if emoji.search(line)
    ]
    assert not found, found
