"""Generation modes: a mode declared in one place reaches every module that reads requests.

`BLEND` is made up here and exists nowhere else: it round-trips through the request, the
record, both history engines, the PNG metadata and a share link without any of those
modules knowing it, which is what the next real mode (image-to-image) relies on.
"""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image
from sqlalchemy import update

from core import form, history, metadata, models, modes, share
from core.generation import GenerationError, GenerationRequest, InvalidRequest
from core.history import schema
from core.modes import Mode, ModeOption
from core.prompt_cache import prompt_key

from .conftest import SMALL, UNDO_0006, current_store

BLEND = Mode(
    id="blend",
    label="Blend",
    remote_task="image_to_image",
    options=(
        ModeOption(
            name="blend",
            label="Blend strength",
            kind="float",
            default=0.5,
            low=0.0,
            high=1.0,
            infotext="Blend strength",
            pipeline_arg="blend_strength",
        ),
    ),
    # Like image-to-image: only the last `blend` share of the steps runs.
    steps_run=lambda request: max(
        1, int(request.num_inference_steps * request.mode_options["blend"])
    ),
)
FACTS = {"model": "demo", "model_revision": "demo", "device": "cpu", "dtype": "float32"}


@pytest.fixture(name="blend")
def fixture_blend():
    """BLEND registered as a mode, and SD3.5 Medium running it, for one test."""
    medium = models.FAMILIES[0]
    pipelines = {**medium.pipelines, "blend": "StableDiffusion3Pipeline"}
    models.FAMILIES[0] = dataclasses.replace(medium, pipelines=pipelines)
    modes.MODES.append(BLEND)
    yield BLEND
    modes.MODES.remove(BLEND)
    models.FAMILIES[0] = medium


def _request(**changes) -> GenerationRequest:
    values = {"prompt": "a fox", "seed": 3, "mode": "blend", "mode_options": {"blend": "0.25"}}
    return GenerationRequest(**{**SMALL, **values, **changes})


def _record(request: GenerationRequest, **facts) -> history.HistoryRecord:
    return history.new_record(
        request,
        seed=request.seed,
        facts={**FACTS, **facts},
        session_id="s",
        duration_seconds=0.1,
    )


# --- the request ---------------------------------------------------------------------------------
def test_a_mode_validates_its_options_and_shapes_the_call(blend):
    """Options are checked, typed and completed; the mode adds its kwargs and step count."""
    request = _request()
    assert request.mode_options == {"blend": 0.25}
    assert request.pipeline_kwargs()["blend_strength"] == 0.25
    assert request.effective_steps == 1  # 2 steps × 0.25, at least one
    assert _request(mode_options={}).mode_options == {"blend": 0.5}
    with pytest.raises(InvalidRequest, match="Blend strength must be a number in 0–1") as info:
        _request(mode_options={"blend": 7})
    assert info.value.field == "blend"
    with pytest.raises(InvalidRequest, match="has no option 'nope'"):
        _request(mode_options={"nope": 1})
    with pytest.raises(InvalidRequest, match="SD3.5 Large does not run Blend") as info:
        _request(family="sd35-large")
    assert info.value.field == "mode"


def test_text_to_image_takes_only_slg_and_unknown_modes_are_refused():
    """txt2img's one option is SLG (off unless asked); a mode nobody declared names the
    known ones."""
    assert GenerationRequest().mode_options == {"slg": "off"}
    assert GenerationRequest().effective_steps == 40
    with pytest.raises(InvalidRequest, match="has no option"):
        GenerationRequest(mode_options={"strength": 0.5})
    with pytest.raises(InvalidRequest, match="use one of: txt2img, img2img") as info:
        GenerationRequest(mode="outpaint")
    assert info.value.field == "mode"


def test_the_prompt_cache_keys_by_mode(blend):
    """Embeddings are kept per mode."""
    assert prompt_key(object(), _request()).mode == "blend"
    assert prompt_key(object(), GenerationRequest()).mode == "txt2img"


# --- record, store, metadata, share link ----------------------------------------------------------
def test_a_mode_round_trips_through_record_store_png_and_link(blend, engine):
    """Request → record → store (both engines) → PNG chunks → import → share link → form →
    request: the mode and its option survive every step."""
    request = _request()
    record = _record(request)
    assert (record.mode, record.mode_options, record.family) == (
        "blend",
        '{"blend":0.25}',
        "sd35-medium",
    )
    assert record.request() == request

    store = current_store()
    saved = store.save(Image.new("RGB", (64, 64), (9, 9, 9)), record)
    assert store.get(saved.id) == saved and saved.problems() == []

    png = store.png_bytes(saved.id)
    chunks = metadata.read_png_text(png)
    assert "Blend strength: 0.25" in chunks[metadata.PARAMETERS_KEY]
    assert json.loads(chunks[metadata.RECORD_KEY])["mode_options"] == {"blend": 0.25}
    assert history.HistoryRecord.from_mapping(json.loads(chunks[metadata.RECORD_KEY])) == saved
    parsed = metadata.parameters_from_png(png)
    assert (parsed.values["mode"], parsed.values["blend"], parsed.family) == (
        "blend",
        0.25,
        "sd35-medium",
    )
    # Without our JSON chunk (another tool's copy), the A1111 key alone tells the mode.
    alone = metadata.parse_parameters(chunks[metadata.PARAMETERS_KEY])
    assert (alone.values["mode"], alone.values["blend"]) == ("blend", 0.25)
    values, warnings = share.check_values(parsed.values)
    assert warnings == [] and values["blend"] == 0.25

    link = share.share_link(saved.form_values(), "http://localhost:8501/")
    assert "mode=blend" in link and "blend=0.25" in link
    from_link, warnings = share.from_query(parse_qs(urlsplit(link).query))
    assert warnings == [] and (from_link["mode"], from_link["blend"]) == ("blend", 0.25)

    state: dict = {}
    form.prepare(state)
    form.hand_over(state, from_link)
    form.prepare(state)
    again = form.build_request(state, seed=int(state["seed"]))
    assert (again.mode, again.mode_options, again.seed) == ("blend", {"blend": 0.25}, 3)


def test_share_links_name_a_bad_mode_or_option(blend):
    """A link's unknown mode or out-of-range option is dropped with a warning; the rest applies."""
    values, warnings = share.from_query({"mode": "warp", "blend": "0.3", "seed": "5"})
    assert values == {"seed": 5, "randomize_seed": False}
    assert "Mode `warp` is not known" in warnings[0]
    values, warnings = share.from_query({"mode": "blend", "blend": "1.5"})
    assert values == {"mode": "blend"}
    assert "Blend strength `1.5` is not valid: use a number in 0–1" in warnings[0]
    assert share.query_string({"seed": 1, "mode": "txt2img"}) == "seed=1"  # links stay as before


@pytest.mark.parametrize(
    ("column", "stored", "problem"),
    [
        (
            "mode",
            "warp",
            "Mode `warp` is not known; use one of: txt2img, img2img, inpaint, upscale, blend",
        ),
        ("mode_options", '{"blend": 7}', "Blend strength `7` is not valid: use a number in 0–1"),
        ("mode_options", "not json", "This record's mode options are not valid JSON"),
        ("mode_options", '{"blend": 0.2, "x": 1}', "Blend has no option 'x'"),
        ("family", "sdxl", "Model family `sdxl` is not known"),
    ],
)
def test_stored_family_mode_and_options_are_checked_like_input(
    blend, engine, column, stored, problem
):
    """An edited row's family, mode or options give a clear problem line, not a crash."""
    store = current_store()
    saved = store.save(Image.new("RGB", (64, 64)), _record(_request()))
    with store.engine.begin() as conn:
        conn.execute(
            update(schema.records).where(schema.records.c.id == saved.id).values({column: stored})
        )
    record = store.get(saved.id)
    assert any(problem in line for line in record.problems()), record.problems()
    record.form_values()  # still drawable
    record.infotext()


# --- migration 0003 --------------------------------------------------------------------------
def test_upgrade_to_0003_gives_old_rows_their_family_and_text_to_image(engine):
    """Rows from 0002 become text to image without options; the demo's are the demo family,
    a Large Hub id's SD3.5 Large, the rest SD3.5 Medium."""
    store = current_store()
    models_by_row = {
        "demo": "demo",
        "stabilityai/stable-diffusion-3.5-large": "sd35-large",
        "/models/my-sd35": "sd35-medium",
    }
    ids = {
        model: store.save(
            Image.new("RGB", (8, 8)), _record(GenerationRequest(**SMALL), model=model)
        ).id
        for model in models_by_row
    }
    with store.engine.begin() as conn:  # back to 0002: what the app before this change left
        for statement in UNDO_0006:  # 0006's additions first
            conn.exec_driver_sql(statement)
        for column in ("family", "mode", "mode_options"):
            conn.exec_driver_sql(f"ALTER TABLE records DROP COLUMN {column}")
        conn.exec_driver_sql("DROP TABLE reservations")  # and 0004's table
        for column in ("source_record", "source_sha256", "mask_sha256"):  # and 0005's
            conn.exec_driver_sql(f"ALTER TABLE records DROP COLUMN {column}")
        conn.exec_driver_sql("DROP TABLE inputs")
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0002'")
    store.engine.dispose()
    history._STORES.clear()
    upgraded = current_store()
    with upgraded.engine.connect() as conn:
        assert schema.current_version(conn) == schema.HEAD
    for model, family in models_by_row.items():
        record = upgraded.get(ids[model])
        assert (record.family, record.mode, record.mode_options) == (family, "txt2img", "{}")
        assert record.problems() == []


# --- the local backend: the family decides which pipeline runs a mode -------------------------
def test_the_family_picks_the_pipeline_of_a_mode(demo_pipe):
    """txt2img runs the loaded pipeline; another mode's class is built on the same modules
    (diffusers' from_pipe, kept for the next call); a mode the family lacks is refused."""
    from core.device import choose_device
    from core.local import LoadedPipeline

    family = dataclasses.replace(
        models.DEMO,
        pipelines={"txt2img": "StableDiffusion3Pipeline", "i2i": "StableDiffusion3Img2ImgPipeline"},
    )
    loaded = LoadedPipeline(
        pipe=demo_pipe,
        model="demo",
        choice=choose_device("cpu", "float32"),
        load_seconds=0.0,
        family=family,
    )
    assert loaded.pipeline_for("txt2img") is demo_pipe
    other = loaded.pipeline_for("i2i")
    assert type(other).__name__ == "StableDiffusion3Img2ImgPipeline"
    assert other.transformer is demo_pipe.transformer and loaded.pipeline_for("i2i") is other
    with pytest.raises(GenerationError, match="has no pipeline for the mode 'inpaint'"):
        loaded.pipeline_for("inpaint")
