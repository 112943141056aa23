"""The generator's X/Y grid, LoRA and styles sections, the gallery's grid view and the
Hardware page's LoRAs, under AppTest with the tiny pipeline and a real history."""

from __future__ import annotations

import pytest

from core.demo_lora import make_demo_lora

from .conftest import current_store, fill_small

GALLERY, HARDWARE = "pages/gallery.py", "pages/hardware.py"


def _grid_axes(at, *, x=("seed", "1, 2"), y=None):
    at.selectbox(key="grid_x_kind").set_value(x[0])
    at.text_input(key="grid_x_text").input(x[1])
    if y is not None:
        at.selectbox(key="grid_y_kind").set_value(y[0]).run()
        at.text_input(key="grid_y_text").input(y[1])
    return at.run()


def _captions(at) -> list[str]:
    return [c.value for c in at.caption]


def test_a_grid_shows_its_count_runs_and_each_cell_opens_in_the_seed_history(app):
    """Typed axes give the cell count before the click; Generate grid keeps each cell as a
    record of its grid and shows the labelled grid to download; a cell opens in the Seed
    history, where its grid can be drawn again."""
    at = _grid_axes(fill_small(app(), prompt="a red fox"), x=("seed", "1, 2"))
    assert not at.exception
    assert "2 cells · 2 images" in _captions(at)
    at.button(key="grid_generate").click().run()
    assert not at.exception
    made = at.session_state["grid_result"]
    assert made.done == 2 and not made.stopped and made.png
    assert [b.label for b in at.get("download_button") if b.key == "grid_download"] == [
        "Download grid PNG"
    ]
    records = current_store().grids.cells(made.grid_id)
    assert [r.seed for r in records] == [1, 2]
    at.selectbox(key="grid_cell").set_value(made.cells[1])
    at.button(key="grid_open_cell").click().run()
    assert not at.exception and at.session_state["gallery_selected"] == records[1].id
    assert "Cell 2 of an X/Y grid" in _captions(at)
    at.button(key="gallery_grid_toggle").click().run()
    assert not at.exception
    assert any("2 × 1 grid · 2 of 2 cells in the history · done" in c for c in _captions(at))
    downloads = [b for b in at.get("download_button") if b.key == "gallery_grid_download"]
    assert [b.label for b in downloads] == ["Download grid PNG"]


def test_a_grid_over_the_daily_limit_is_refused_with_the_numbers(app, monkeypatch):
    """SD_DAILY_LIMIT=1: a 2-cell grid says why it cannot run and Generate grid is off."""
    monkeypatch.setenv("SD_DAILY_LIMIT", "1")
    at = _grid_axes(fill_small(app()), x=("guidance", "3, 6"))
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any(
        "This grid has 2 cells (2 images) but you have 1 of 1 images left" in w for w in warnings
    )
    assert at.button(key="grid_generate").disabled


def test_bad_axis_values_are_named_before_the_click(app):
    at = _grid_axes(fill_small(app(), prompt="a red fox"), x=("prompt_sr", "green, blue"))
    assert any("did not find 'green'" in w.value for w in at.warning)
    assert at.button(key="grid_generate").disabled


def test_a_saved_style_is_merged_into_the_prompt_and_recorded(app):
    """Save the prompt as a style, choose it for another prompt: the image's prompt is the
    merged one and its record keeps the style; Apply puts it into the prompt box."""
    at = fill_small(app(), prompt="{prompt}, oil painting")
    at.text_input(key="style_new_name").input("Oil")
    at.button(key="style_save").click().run()
    assert not at.exception and any(
        "Saved the prompt as the style `Oil`" in s.value for s in at.success
    )
    at.text_area(key="prompt").input("a lighthouse").run()
    at.multiselect(key="styles").select("Oil").run()
    at.button(key="generate").click().run()
    assert not at.exception
    (record,) = current_store().page().records
    assert record.prompt == "a lighthouse, oil painting"
    assert [s.name for s in record.applied_styles()] == ["Oil"]
    at.multiselect(key="styles").select("Oil").run()
    at.button(key="style_apply").click().run()
    assert at.text_area(key="prompt").value == "a lighthouse, oil painting"
    assert at.multiselect(key="styles").value == []


@pytest.fixture(name="lora_folder")
def fixture_lora_folder(tmp_path, monkeypatch, demo_pipe):
    folder = tmp_path / "loras"
    make_demo_lora(demo_pipe, folder / "grain.safetensors")
    (folder / "old.ckpt").write_bytes(b"not read")
    monkeypatch.setenv("SD_LORA_DIR", str(folder))
    return folder


def test_a_picked_lora_with_its_weight_goes_into_the_record_and_the_hardware_page(app, lora_folder):
    """The LoRA expander lists the folder's LoRA (and why the pickle is not offered); the
    picked one with its weight is applied and recorded; the Hardware page lists it."""
    at = fill_small(app())
    assert any("1 file not offered" in c for c in _captions(at))
    at.multiselect(key="lora_pick").select("grain").run()
    at.number_input(key="lora_weight::grain").set_value(0.5).run()
    at.button(key="generate").click().run()
    assert not at.exception
    (record,) = current_store().page().records
    assert [(e["name"], e["weight"]) for e in record.lora_entries()] == [("grain", 0.5)]
    at.switch_page(HARDWARE).run()
    assert not at.exception
    assert any("1 read and kept in CPU RAM" in c for c in _captions(at))
    assert at.dataframe[0].value["LoRA"].tolist() == ["grain"]


def test_a_hub_lora_is_named_checked_downloaded_and_recorded(app, demo_pipe, tmp_path):
    """No SD_LORA_DIR: the LoRAs section still takes a Hub id. A pickle id is refused on
    Add (nothing asked of the Hub); `owner/repo` is picked as its
    pytorch_lora_weights.safetensors, downloaded on Generate from the Hub stand-in and
    recorded with its weight."""
    from core.lora_hub import HubLoras
    from core.service import get_backend
    from testkit.hub_standin import HubStandIn

    repo = tmp_path / "repo"
    make_demo_lora(demo_pipe, repo / "pytorch_lora_weights.safetensors")
    server = HubStandIn(repo, repo_id="someone/grain").start()
    try:
        at = fill_small(app())
        get_backend().lora_folder.hub = HubLoras(endpoint=server.url, cache_dir=tmp_path / "hf")
        at.text_input(key="lora_hub_input").input("someone/grain/model.bin")
        at.button(key="lora_hub_add").click().run()
        assert [e.value for e in at.error] and "pickled" in at.error[0].value
        at.text_input(key="lora_hub_input").input(" someone/grain ")
        at.button(key="lora_hub_add").click().run()
        name = "someone/grain/pytorch_lora_weights.safetensors"
        assert not at.exception and not at.error
        assert at.session_state["lora_hub_picked"] == [name]
        at.number_input(key=f"lora_weight::{name}").set_value(0.5).run()
        at.button(key="generate").click().run()
        assert not at.exception
        (record,) = current_store().page().records
        assert [(e["name"], e["weight"]) for e in record.lora_entries()] == [(name, 0.5)]
        assert server.file_gets() == ["pytorch_lora_weights.safetensors"]
        at.button(key=f"lora_hub_remove::{name}").click().run()
        assert at.session_state["lora_hub_picked"] == [] and at.session_state["loras"] == []
    finally:
        server.stop()


def test_a_strength_axis_is_offered_for_vary_and_its_cells_vary_the_result(app):
    """Text to image has no Strength axis; Vary has one, and a 2-cell strength grid keeps two
    image-to-image records of the same source with the two strengths."""
    at = fill_small(app(), prompt="a red fox")
    assert "Strength" not in at.selectbox(key="grid_x_kind").options
    at.button(key="generate").click().run()
    (source,) = current_store().page().records
    at.button(key="work_0_img2img").click().run()
    assert "Strength" in at.selectbox(key="grid_x_kind").options
    at = _grid_axes(at, x=("strength", "0.5, 1"))
    assert not at.exception and "2 cells · 2 images" in _captions(at)
    at.button(key="grid_generate").click().run()
    assert not at.exception
    made = at.session_state["grid_result"]
    cells = current_store().grids.cells(made.grid_id)
    assert [(r.mode, r.source_record, r.options()["strength"]) for r in cells] == [
        ("img2img", source.id, 0.5),
        ("img2img", source.id, 1.0),
    ]
