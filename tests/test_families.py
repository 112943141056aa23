"""Model families: declarations, which family a model is, and what follows from it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import psutil
import pytest
import torch

from core import models
from core.estimate import SpeedLog, draft_for
from core.generation import GenerationRequest, InvalidRequest
from core.memory import GB, choose_memory_plan, component_bytes
from core.models import DEMO, SD35_LARGE, SD35_LARGE_TURBO, SD35_MEDIUM, resolve_family
from core.settings import SettingsError, load_settings

from .conftest import current_store, fill_small
from .test_hardware import FakeCuda, FakeGpu

TURBO = {"SD_MODEL_FAMILY": "sd35-large-turbo"}
HARDWARE = "pages/hardware.py"


def _folder(tmp_path, config: object, *, raw: bytes | None = None):
    """A model folder whose transformer/config.json holds `config` (or `raw` bytes)."""
    folder = tmp_path / "model"
    (folder / "transformer").mkdir(parents=True)
    data = raw if raw is not None else json.dumps(config).encode()
    (folder / "transformer" / "config.json").write_bytes(data)
    return folder


# --- declarations -----------------------------------------------------------------------------
def test_families_hold_their_cards_defaults_and_sizes():
    """Medium 1024²/40/4.5, Large 28/3.5, Large Turbo 4 steps without CFG, the demo light."""
    assert [f.id for f in models.FAMILIES] == [
        "sd35-medium",
        "sd35-large",
        "sd35-large-turbo",
        "demo",
    ]
    assert (SD35_MEDIUM.width, SD35_MEDIUM.steps, SD35_MEDIUM.guidance) == (1024, 40, 4.5)
    assert (SD35_LARGE.steps, SD35_LARGE.guidance) == (28, 3.5)
    assert (SD35_LARGE_TURBO.steps, SD35_LARGE_TURBO.guidance) == (4, 0.0)
    assert (DEMO.width, DEMO.height, DEMO.steps) == (512, 512, 20)
    assert SD35_MEDIUM.sizes.describe() == "512–1440, a multiple of 16"
    assert all(f.pipeline_name("txt2img") == "StableDiffusion3Pipeline" for f in models.FAMILIES)
    assert SD35_MEDIUM.gated and not DEMO.gated


def test_large_weighs_its_8b_transformer_and_shares_the_encoders():
    """Large's transformer is 16.29 GB at bf16; text encoders and VAE are Medium's; Turbo =
    Large."""
    assert SD35_LARGE.components_gb["transformer"] == 16.29
    assert round(SD35_MEDIUM.total_gb, 2) == 16.27
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3", "vae"):
        assert SD35_LARGE.components_gb[name] == SD35_MEDIUM.components_gb[name]
    assert SD35_LARGE_TURBO.components_gb == SD35_LARGE.components_gb
    assert component_bytes("float32", SD35_LARGE)["transformer"] == int(16.29 * 2 * GB)


def test_each_familys_draft_is_a_valid_size_with_no_more_steps_than_its_default():
    """The draft preset is read from the family: 512² (valid for each) and min(20, default)."""
    drafts = {f.id: draft_for(f) for f in models.FAMILIES}
    assert drafts["sd35-medium"] == {"width": 512, "height": 512, "steps": 20}
    assert drafts["sd35-large-turbo"] == {"width": 512, "height": 512, "steps": 4}
    for family in models.FAMILIES:
        draft = drafts[family.id]
        assert draft["steps"] <= family.steps
        assert draft["width"] in family.sizes.nearest(draft["width"])


def test_a_declaration_cannot_be_changed():
    """Families are frozen, their tables read-only."""
    with pytest.raises(AttributeError):
        SD35_MEDIUM.steps = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        SD35_MEDIUM.pipelines["img2img"] = "X"  # type: ignore[index]


# --- which family ------------------------------------------------------------------------------
def test_the_setting_wins_then_demo_then_the_hub_id():
    """SD_MODEL_FAMILY beats everything; `demo` is the demo; a listed Hub id names its family."""
    assert resolve_family("stabilityai/stable-diffusion-3.5-medium", "sd35-large").family is (
        SD35_LARGE
    )
    assert resolve_family("demo").family is DEMO
    found = resolve_family("StabilityAI/Stable-Diffusion-3.5-Large-Turbo")
    assert (found.family, found.source, found.note) == (SD35_LARGE_TURBO, "hub id", "")


def test_a_folder_is_told_by_its_transformer_config(tmp_path):
    """Dual-attention layers mean Medium; 38 layers mean Large (Turbo only by the setting)."""
    medium = _folder(tmp_path / "m", {"num_layers": 24, "dual_attention_layers": [0, 1, 2]})
    assert resolve_family(str(medium)).family is SD35_MEDIUM
    large = _folder(tmp_path / "l", {"num_layers": 38, "num_attention_heads": 38})
    found = resolve_family(str(large))
    assert (found.family, found.source) == (SD35_LARGE, "folder")
    assert "SD_MODEL_FAMILY=sd35-large-turbo" in found.note
    assert resolve_family(str(large), "sd35-large-turbo").family is SD35_LARGE_TURBO


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"\xff\xfe binary",
        b"[38]",
        json.dumps({"num_layers": True, "dual_attention_layers": []}).encode(),
        json.dumps({"num_layers": "38"}).encode(),
        b"[" * 100_000,  # deep nesting, and over the size cap
        b'{"num_layers": 38, "pad": "' + b"x" * 70_000 + b'"}',  # a real key, but too big
    ],
)
def test_a_garbage_config_is_an_unknown_family_with_medium_rules(tmp_path, raw):
    """An unreadable, odd or oversized config gives Medium's rules and the note, no crash."""
    found = resolve_family(str(_folder(tmp_path, None, raw=raw)))
    assert (found.family.id, found.source, found.known) == (SD35_MEDIUM.id, "unknown", False)
    assert found.family.sizes == SD35_MEDIUM.sizes and not found.family.slg_on  # SLG off
    assert found.note.startswith("Unknown model family: using SD3.5 Medium's rules")


def test_an_unknown_hub_id_or_missing_folder_uses_medium_rules(tmp_path):
    """A Hub id no family lists, or a folder without a config, is unknown (with the note)."""
    assert not resolve_family("someone/sd3-finetune").known
    (tmp_path / "empty").mkdir()
    assert not resolve_family(str(tmp_path / "empty")).known
    assert not resolve_family("x" * 5000).known  # a name too long for the file system


def test_setting_names_the_valid_families(tmp_path):
    """SD_MODEL_FAMILY accepts auto or a family id; anything else is refused naming them."""
    none = tmp_path / "none"
    assert load_settings(environ={}, dotenv_path=none).model_family == "auto"
    settings = load_settings(environ={"SD_MODEL_FAMILY": "SD35-Large"}, dotenv_path=none)
    assert models.family_for(settings).family is SD35_LARGE
    with pytest.raises(SettingsError, match="auto, sd35-medium, sd35-large, sd35-large-turbo"):
        load_settings(environ={"SD_MODEL_FAMILY": "sdxl"}, dotenv_path=none)
    with pytest.raises(SettingsError, match="SD_MODEL=demo"):
        load_settings(environ={"SD_MODEL_FAMILY": "demo", "SD_MODEL": "a/b"}, dotenv_path=none)


# --- what follows from the family -----------------------------------------------------------
def test_a_request_takes_its_familys_defaults_and_names_its_range():
    """Unset size/steps/guidance are the family's; a bad size names the family and range."""
    turbo = GenerationRequest(family="sd35-large-turbo")
    assert (turbo.width, turbo.num_inference_steps, turbo.guidance_scale) == (1024, 4, 0.0)
    assert GenerationRequest(family="demo").width == 512
    with pytest.raises(InvalidRequest, match="512–1440 for SD3.5 Large") as info:
        GenerationRequest(family="sd35-large", width=2048)
    assert info.value.field == "width"
    with pytest.raises(InvalidRequest, match="sd35-medium, sd35-large") as info:
        GenerationRequest(family="sdxl")
    assert info.value.field == "family"


def test_the_estimate_uses_the_familys_priors():
    """Before measuring, a CPU estimate comes from the family: Large's derived step is
    slower than Medium's measured one; the demo family has none."""
    speeds = SpeedLog()
    size = {"model": "m", "device": "cpu", "width": 1024, "height": 1024, "images": 1}
    medium = speeds.estimate(**size, steps=28, priors=SD35_MEDIUM.priors)
    large = speeds.estimate(**size, steps=28, priors=SD35_LARGE.priors)
    assert medium.seconds == 28 * 51.0 + 47.0 + 19.0
    assert large.seconds == 28 * SD35_LARGE.priors.step_s_1024 + 47.0 + 19.0
    assert SD35_LARGE.priors.step_s_1024 == pytest.approx(51.0 * 2.77, abs=0.1)
    assert not SD35_LARGE.priors.measured and SD35_MEDIUM.priors.measured
    assert speeds.estimate(**size, steps=28, priors=DEMO.priors) is None


def test_the_planner_weighs_large_on_a_24_gb_card():
    """20 GB free VRAM fits Medium whole, but Large needs model offload."""
    plan = {"device": "cuda", "dtype": "bfloat16"}
    medium = component_bytes("bfloat16", SD35_MEDIUM)
    large = component_bytes("bfloat16", SD35_LARGE)
    assert choose_memory_plan(20 * GB, 64 * GB, **plan, components=medium).verdict == "fits"
    chosen = choose_memory_plan(20 * GB, 64 * GB, **plan, components=large)
    assert (chosen.verdict, chosen.offload) == ("needs offload", "model")


def test_gated_messages_name_the_family_and_its_licence():
    """A refused gated download names the family and its licence; the size is its own."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    from core.errors import explain_load_error

    model = "stabilityai/stable-diffusion-3.5-large"

    def refused(cls, status):
        request = httpx2.Request("GET", f"https://huggingface.co/{model}")
        return cls("refused", response=httpx2.Response(status, request=request))

    gated = explain_load_error(refused(GatedRepoError, 403), model=model, has_token=True)
    assert SD35_LARGE.licence_url in gated
    anonymous = explain_load_error(
        refused(RepositoryNotFoundError, 401), model=model, has_token=False
    )
    assert "SD3.5 Large needs its licence accepted at" in anonymous
    offline = explain_load_error(LocalEntryNotFoundError("x"), model=model, has_token=False)
    assert "(~28 GB)" in offline


# --- SD_MODEL_FAMILY=sd35-large-turbo with the demo model or a local folder --------------------
@pytest.fixture(name="turbo_model", params=["demo", "folder"])
def fixture_turbo_model(request, monkeypatch):
    """SD_MODEL_FAMILY=sd35-large-turbo on the demo model, or on a saved folder of it."""
    monkeypatch.setenv("SD_MODEL_FAMILY", "sd35-large-turbo")
    if request.param == "folder":
        monkeypatch.setenv("SD_MODEL", str(request.getfixturevalue("demo_dir")))
    return request.param


def test_turbo_generator_defaults_are_turbos(app, turbo_model):
    """The generator opens with Turbo's 4 steps and guidance 0 (and its 1024² size)."""
    at = app()
    assert not at.exception
    assert at.slider(key="steps").value == 4
    assert at.slider(key="guidance_scale").value == 0.0
    assert (at.number_input(key="width").value, at.number_input(key="height").value) == (
        1024,
        1024,
    )
    assert not any("Unknown model family" in i.value for i in at.info)


def test_turbo_hardware_page_plans_with_larges_sizes(app, turbo_model, monkeypatch):
    """On a 24 GB card with 20 GB free, the plan is Large's: T5 in int8 and model offload,
    23.8 GB of RAM holding the 23.0 GB of weights (SD3.5 Medium would fit whole); each
    candidate is listed with Large's numbers (as is: 29.1 GB, more than the card has)."""
    FakeCuda(FakeGpu("NVIDIA GeForce RTX 4090", (8, 9), 24 * GB, 20 * GB, 0)).install(monkeypatch)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    ram = SimpleNamespace(total=128 * GB, available=64 * GB, percent=50.0)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: ram)
    at = app(HARDWARE)
    assert not at.exception
    plans = [i.value for i in at.info if "**needs quantization**" in i.value]
    assert plans and all("23.8 GB of RAM holds the offloaded weights" in p for p in plans)
    assert all("T5 int8 + model offload: peak 17.8 GB on the GPU" in p for p in plans)
    if turbo_model == "demo":  # the demo itself is judged by its own size, Turbo beside it
        assert any(p.startswith("SD3.5 Large Turbo here: **needs quantization**") for p in plans)
    rows = at.table[0].value
    assert rows.loc[rows["Plan"] == "as is", "Peak (GPU)"].item() == "29.1 GB"
    assert rows.loc[rows[""] == "▶", "Plan"].item() == "T5 int8 + model offload"


def test_a_turbo_record_names_its_family(app, engine, monkeypatch):
    """A generation under SD_MODEL_FAMILY=sd35-large-turbo is stored naming the family."""
    monkeypatch.setenv("SD_MODEL_FAMILY", "sd35-large-turbo")
    at = fill_small(app(), seed=11)
    at.button(key="generate").click().run()
    assert not at.exception
    (record,) = current_store().page().records
    assert (record.family, record.mode, record.mode_options) == (
        "sd35-large-turbo",
        "txt2img",
        '{"slg":"off"}',  # Large Turbo's SLG starts off
    )
    assert (record.seed, record.guidance_scale, record.model) == (11, 0.0, "demo")
    assert record.problems() == []


def test_an_unknown_folder_says_which_rules_apply(app, monkeypatch, demo_dir):
    """A folder whose architecture no family claims opens with Medium's rules and says so."""
    monkeypatch.setenv("SD_MODEL", str(demo_dir))
    at = app()
    assert not at.exception
    assert any(i.value.startswith("Unknown model family: using SD3.5 Medium") for i in at.info)
    assert at.slider(key="steps").value == 40
