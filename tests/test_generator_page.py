"""The app under AppTest: every page renders, and the generator works end to end."""

import pytest

from core import form
from core.service import get_backend
from tests.conftest import fill_small

PAGES = ["pages/generate.py", "pages/gallery.py", "pages/hardware.py"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception(app, page):
    """Each page draws with a title and no exception, before any model is loaded."""
    at = app(page)
    assert not at.exception
    assert at.title
    assert get_backend().state == "not loaded"


def test_generator_labels_are_the_contract(app):
    """The widgets carry the labels users (and the browser test) look for."""
    at = app()
    labels = {w.label for w in [*at.text_area, *at.number_input, *at.slider, *at.checkbox]}
    assert {
        "Prompt",
        "Negative prompt",
        "Seed",
        "Randomize seed",
        "Width",
        "Height",
        "Guidance scale",
        "Steps",
        "Images",
    } <= labels
    assert at.button(key="generate").label == "Generate"
    assert at.checkbox(key="randomize_seed").value is True
    assert any("demo model" in i.value for i in at.info)


def test_generate_shows_image_seed_and_download(app):
    """Fill, click Generate: an image, its seed and a PNG download appear."""
    at = fill_small(app(), seed=7)
    at.button(key="generate").click().run()
    assert not at.exception
    assert not at.error
    assert "Seed 7" in at.success[0].value
    assert [i.captions for i in at.get("image") if i.captions != [""]] == [["Seed 7"]]
    assert at.get("download_button")
    result = at.session_state["last_result"]
    assert result.pngs[0].startswith(b"\x89PNG")
    assert result.seeds == (7,)


def test_same_settings_give_the_same_image(app):
    """Generating twice with a fixed seed gives byte-identical PNGs."""
    at = fill_small(app(), seed=11)
    at.button(key="generate").click().run()
    first = at.session_state["last_result"].sha256
    at.button(key="generate").click().run()
    assert at.session_state["last_result"].sha256 == first


def test_randomized_seed_is_shown_and_written_back(app):
    """With Randomize seed on, the seed actually used lands in the Seed field."""
    at = fill_small(app(), seed=7)
    at.checkbox(key="randomize_seed").check()
    at.button(key="generate").click().run()
    used = at.session_state["last_result"].seeds[0]
    assert at.number_input(key="seed").value == used
    assert f"Seed {used}" in at.success[0].value
    assert at.checkbox(key="randomize_seed").value is True


def test_invalid_width_names_the_nearest_valid_values(app):
    """A width that is not a multiple of 16 gives an error with the fix, not a crash."""
    at = fill_small(app())
    at.number_input(key="width").set_value(1000)
    at.button(key="generate").click().run()
    assert not at.exception
    assert "Nearest valid: 992 or 1008" in at.error[0].value
    assert "last_result" not in at.session_state


def test_one_load_serves_two_sessions(app):
    """Two browser sessions generating share one loaded pipeline."""
    first = fill_small(app(), seed=1)
    first.button(key="generate").click().run()
    second = fill_small(app(), seed=1)
    second.button(key="generate").click().run()
    assert get_backend().load_count == 1
    assert first.session_state["last_result"].sha256 == second.session_state["last_result"].sha256


def test_load_error_is_shown_and_retry_works_without_restart(app, monkeypatch, tmp_path):
    """A missing model folder shows the fix; once it exists the next click generates."""
    from core.demo import save_demo_pipeline

    folder = tmp_path / "model"
    monkeypatch.setenv("SD_MODEL", str(folder))
    at = fill_small(app())
    at.button(key="generate").click().run()
    assert not at.exception
    assert "does not exist" in at.error[0].value
    save_demo_pipeline(folder)
    at.button(key="generate").click().run()
    assert not at.error
    assert at.session_state["last_result"].seeds == (7,)


def test_example_prompt_fills_the_prompt(app):
    """Clicking an example puts it in the Prompt box."""
    at = app()
    at.button(key="example_0").click().run()
    assert at.text_area(key="prompt").value == form.EXAMPLE_PROMPTS[0]


def test_aspect_preset_sets_a_valid_size(app):
    """Choosing 16:9 sets width and height to the snapped preset."""
    at = app()
    next(b for b in at.get("button_group") if b.key == "aspect").set_value("16:9").run()
    assert (at.number_input(key="width").value, at.number_input(key="height").value) == (
        1360,
        768,
    )


def test_settings_survive_a_page_change(app):
    """The form keeps its values after visiting another page (the prompt once generated)."""
    at = fill_small(app(), prompt="kept", seed=5)
    at.button(key="generate").click().run()
    at.switch_page("pages/gallery.py").run()
    at.switch_page("pages/generate.py").run()
    assert at.text_area(key="prompt").value == "kept"
    assert at.number_input(key="seed").value == 5


def test_download_carries_the_a1111_parameters(app):
    """The generator's Download PNG is the stored file, with its settings in the PNG."""
    import io

    from PIL import Image

    at = fill_small(app(), prompt="a lighthouse", seed=21)
    at.button(key="generate").click().run()
    png = at.session_state["last_result"].pngs[0]
    parameters = Image.open(io.BytesIO(png)).info["parameters"]
    assert parameters.startswith("a lighthouse\n")
    assert "Seed: 21" in parameters
    assert "Size: 512x512" in parameters
