"""The generator's layout under AppTest: output beside the form, the preview toggle, the strip."""

import os

from core import recent
from tests.conftest import fill_small


def _form_and_output(at):
    """The page's two top-level columns: the form on the left, the output on the right."""
    from streamlit.testing.v1.element_tree import Column

    for block in at.main.children.values():
        kids = list(getattr(block, "children", {}).values())
        if len(kids) == 2 and all(isinstance(k, Column) for k in kids):
            return kids
    raise AssertionError("no two-column row at the top of the page")


def _result_captions(block) -> list[list[str]]:
    return [i.captions for i in block.get("image") if i.captions != [""]]


def test_form_left_output_right(app):
    """The prompt, settings and Generate are in the left column; the image lands in the right."""
    at = fill_small(app(), seed=7)
    form_column, output_column = _form_and_output(at)
    assert {t.label for t in form_column.text_area} == {"Prompt", "Negative prompt"}
    assert {s.label for s in form_column.slider} >= {"Steps", "Guidance scale", "Images"}
    assert form_column.button(key="generate").label == "Generate"
    assert "Your images appear here." in [c.value for c in output_column.caption]

    at.button(key="generate").click().run()
    assert not at.exception
    form_column, output_column = _form_and_output(at)
    assert _result_captions(output_column) == [["Seed 7"]]
    assert "Seed 7" in output_column.success[0].value
    assert output_column.get("download_button")
    assert not _result_captions(form_column)


def test_ctrl_enter_is_generates_shortcut_and_no_form_holds_the_prompt_back(app):
    """Ctrl+Enter is Generate's keyboard shortcut (it works from the prompt box); no form
    holds the typed prompt back from the other buttons that use it (Generate grid, the
    styles' Apply and Save)."""
    at = app()
    assert not at.get("form")
    generate = at.button(key="generate")
    assert generate.label == "Generate" and generate.proto.shortcut.lower() == "ctrl+enter"
    assert "Ctrl+Enter" in at.text_area(key="prompt").help


def test_preview_toggle_is_on_by_default(app):
    """SD_PREVIEW unset: the Live preview toggle starts on, with no remote note."""
    at = app()
    assert at.toggle(key="live_preview").label == "Live preview"
    assert at.toggle(key="live_preview").value is True
    assert not [c for c in at.caption if "No live preview" in c.value]


def test_preview_setting_false_starts_the_toggle_off(app, monkeypatch):
    """SD_PREVIEW=false starts the toggle off."""
    monkeypatch.setenv("SD_PREVIEW", "false")
    at = app()
    assert at.toggle(key="live_preview").value is False


def test_preview_toggle_survives_a_page_change(app):
    """Turning the preview off is remembered after visiting another page."""
    at = app()
    at.toggle(key="live_preview").set_value(False).run()
    at.switch_page("pages/gallery.py").run()
    at.switch_page("pages/generate.py").run()
    assert at.toggle(key="live_preview").value is False


def test_generation_with_preview_on_or_off_gives_the_same_image(app):
    """The page's result is the same PNG pixels with the toggle on and off."""
    at = fill_small(app(), seed=9)
    at.slider(key="steps").set_value(4)
    at.button(key="generate").click().run()
    with_preview = at.session_state["last_result"].sha256
    at.toggle(key="live_preview").set_value(False)
    at.button(key="generate").click().run()
    assert not at.exception
    assert at.session_state["last_result"].sha256 == with_preview


def test_remote_mode_mentions_no_preview_only_when_turned_on(app, monkeypatch):
    """Remote: the toggle starts off and says nothing; turned on, the page says why it can't."""
    monkeypatch.setenv("SD_BACKEND", "remote")
    monkeypatch.setenv("SD_REMOTE_URL", "http://127.0.0.1:9")
    at = app()
    assert not at.exception
    assert at.toggle(key="live_preview").value is False
    assert not [c for c in at.caption if "No live preview" in c.value]
    at.toggle(key="live_preview").set_value(True).run()
    assert [c for c in at.caption if "No live preview with a remote service" in c.value]


def test_recent_strip_shows_an_earlier_result_again_with_its_settings(app):
    """Two generations fill the strip; clicking the first shows it again and offers its settings."""
    at = fill_small(app(), prompt="first prompt", seed=7)
    at.button(key="generate").click().run()
    first_png = at.session_state["last_result"].pngs[0]
    at = fill_small(at, prompt="second prompt", seed=8)
    at.button(key="generate").click().run()
    entries = recent.entries(at.session_state)
    assert [e.label for e in entries] == ["Seed 8", "Seed 7"]
    _, output_column = _form_and_output(at)
    assert _result_captions(output_column) == [["Seed 8"]]

    at.button(key=f"recent_{entries[1].id}").click().run()
    assert not at.exception
    _, output_column = _form_and_output(at)
    assert _result_captions(output_column) == [["Seed 7"]]
    assert "first prompt" in [t.value.splitlines()[0] for t in output_column.text]
    assert at.session_state["last_result"].pngs[0] == first_png  # the stored file again

    at.button(key="recent_use").click().run()
    assert at.text_area(key="prompt").value == "first prompt"
    assert at.number_input(key="seed").value == 7
    assert at.checkbox(key="randomize_seed").value is False


def test_recent_image_deleted_from_history_shows_a_placeholder(app):
    """An entry whose stored image was deleted shows a placeholder and offers no download."""
    from core import history

    at = fill_small(app(), seed=7)
    at.button(key="generate").click().run()
    (entry,) = recent.entries(at.session_state)
    assert history.open_store(os.environ["SD_DATA_DIR"]).delete(entry.record_ids[0])
    at.button(key=f"recent_{entry.id}").click().run()
    assert not at.exception
    assert not [b for b in at.get("download_button") if b.label == "Download PNG"]
    assert [c for c in at.caption if "No longer in the seed history" in c.value]
