"""The gallery page and the generator's history hook, under AppTest with the tiny pipeline."""

from __future__ import annotations

from PIL import Image

from core import history
from core.generation import GenerationRequest

from .conftest import SMALL, current_store, fill_small, replace_blob

GALLERY = "pages/gallery.py"
FACTS = {"model": "demo", "model_revision": "demo", "device": "cpu", "dtype": "float32"}
HTML_PROMPT = '<script>alert("x")</script> **bold** <img src=x onerror=alert(1)> [link](http://e.x)'


def _store() -> history.HistoryStore:
    return current_store()


def _add(store, *, prompt="a quiet lake", seed=5, created_at=None, **request):
    req = GenerationRequest(prompt=prompt, seed=seed, **{**SMALL, **request})
    record = history.new_record(
        req,
        seed=seed,
        facts=FACTS,
        session_id="elsewhere",
        duration_seconds=0.1,
        created_at=created_at,
    )
    return store.save(Image.new("RGB", (64, 64), (seed % 256, 0, 0)), record)


def _texts(at) -> list[str]:
    return [t.value for t in at.text]


def test_generation_is_saved_and_shown_in_the_gallery(app, engine):
    """After a generation the gallery shows the entry with its seed, size and prompt."""
    at = app()
    fill_small(at, prompt="a red fox", seed=7)
    at.button(key="generate").click().run()
    assert not at.exception
    assert at.session_state["last_result"].history_error is None
    at.switch_page(GALLERY).run()
    assert not at.exception
    texts = _texts(at)
    assert "Seed 7 · 512×512" in texts and "a red fox" in texts
    assert any("1 image" in c.value for c in at.caption)


def test_unwritable_history_warns_and_still_shows_the_result(app, monkeypatch, tmp_path):
    """A data dir that cannot be written gives a warning; the image is still shown."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("SD_DATA_DIR", str(blocker / "data"))
    at = app()
    fill_small(at)
    at.button(key="generate").click().run()
    assert not at.exception
    assert any("SD_DATA_DIR" in w.value for w in at.warning)
    assert len(at.session_state["last_result"].pngs) == 1
    assert at.session_state["last_result"].pngs[0].startswith(b"\x89PNG")
    assert at.get("download_button")


def test_use_these_settings_fills_the_generator(app, engine):
    """Details → Use these settings opens the generator with every field of the record."""
    saved = _add(
        _store(),
        prompt="a misty forest",
        seed=1234,
        negative_prompt="blur",
        guidance_scale=6.5,
        width=768,
        height=640,
    )
    at = app(GALLERY)
    at.button(key=f"open_{saved.id}").click().run()
    at.button(key="use_settings").click().run()
    assert not at.exception
    assert at.text_area(key="prompt").value == "a misty forest"
    assert at.text_area(key="negative_prompt").value == "blur"
    assert at.number_input(key="seed").value == 1234
    assert at.checkbox(key="randomize_seed").value is False
    assert (at.number_input(key="width").value, at.number_input(key="height").value) == (768, 640)
    assert at.slider(key="guidance_scale").value == 6.5
    assert at.slider(key="steps").value == 2


def test_html_and_markdown_prompt_is_rendered_as_text(app, engine):
    """A prompt with HTML and markdown appears verbatim as text and in no markdown element."""
    saved = _add(_store(), prompt=HTML_PROMPT)
    at = app(GALLERY)
    at.button(key=f"open_{saved.id}").click().run()
    assert not at.exception
    assert HTML_PROMPT in [c.value for c in at.code]
    assert any(t.startswith("<script>") for t in _texts(at))
    rendered = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert not any("<script" in m or "onerror" in m for m in rendered)


def test_details_show_every_field_and_a_share_link(app, engine):
    """The details view lists the recorded fields and a link carrying the settings."""
    saved = _add(_store(), prompt="a red barn", seed=99)
    at = app(GALLERY)
    at.button(key=f"open_{saved.id}").click().run()
    (table,) = [c.value for c in at.code if c.value.startswith("id ")]
    fields = dict((line.split(maxsplit=1) + [""])[:2] for line in table.splitlines())
    assert fields["seed"] == "99" and fields["model_revision"] == "demo"
    assert fields["id"] == saved.id
    links = [c.value for c in at.code if "?" in c.value]
    assert links and "prompt=a+red+barn" in links[0] and "seed=99" in links[0]


def test_delete_asks_first_then_hides_the_record(app, engine):
    """Delete needs a confirmation; then the record is gone from the gallery (its bytes wait
    7 days for an admin's restore: tests/test_ownership.py)."""
    store = _store()
    saved = _add(store)
    at = app(GALLERY)
    at.button(key=f"open_{saved.id}").click().run()
    at.button(key="delete").click().run()
    assert store.get(saved.id) is not None
    at.button(key="confirm_delete").click().run()
    assert not at.exception
    assert store.get(saved.id) is None
    assert any("0 images" in c.value for c in at.caption)


def test_pagination_and_search(app, engine):
    """30 records make two pages of 24 newest first; the search narrows the grid."""
    store = _store()
    for i in range(30):
        _add(
            store,
            prompt="a blue whale" if i == 3 else f"picture {i}",
            seed=i,
            created_at=1000.0 + i,
        )
    at = app(GALLERY)
    assert any("30 images · page 1 of 2" in c.value for c in at.caption)
    assert "Seed 29 · 512×512" in _texts(at) and "Seed 5 · 512×512" not in _texts(at)
    at.button(key="page_next").click().run()
    assert "Seed 5 · 512×512" in _texts(at)
    at.text_input(key="gallery_search").input("WHALE").run()
    assert any("1 image · page 1 of 1" in c.value for c in at.caption)
    assert "a blue whale" in _texts(at)


def test_missing_image_shows_a_placeholder_not_a_crash(app, engine):
    """A record whose PNG is gone and thumbnail is garbage still draws in grid and details."""
    store = _store()
    saved = _add(store)
    replace_blob(store, saved.id, png=None, thumb=b"RIFF\0\0not a webp")  # st.image would raise
    at = app(GALLERY)
    at.button(key=f"open_{saved.id}").click().run()
    assert not at.exception
    assert "Seed 5 · 512×512" in _texts(at)


def test_shared_link_fills_the_generator_and_names_bad_values(fresh_cache):
    """Query params fill the form; an out-of-range value gets a warning with the range."""
    from streamlit.testing.v1 import AppTest

    from .conftest import APP_FILE

    at = AppTest.from_file(APP_FILE, default_timeout=120)
    at.query_params.update(prompt="a shared <b>link</b>", seed="321", steps="500", width="768")
    at.run()
    assert not at.exception
    assert at.text_area(key="prompt").value == "a shared <b>link</b>"
    assert at.number_input(key="seed").value == 321
    assert at.number_input(key="width").value == 768
    assert any("Steps" in w.value and "1–100" in w.value for w in at.warning)
    # The link applies only once (the prompt sits in a form, so edit a field outside it).
    at.number_input(key="seed").set_value(5).run()
    assert at.number_input(key="seed").value == 5
    assert at.text_area(key="prompt").value == "a shared <b>link</b>"


def test_regenerate_and_verify_reports_identical(app, engine):
    """Regenerate & verify on a fresh generation reports identical, with no setup warning."""
    at = app()
    fill_small(at, prompt="a lighthouse", seed=21)
    at.button(key="generate").click().run()
    record = _store().page().records[0]
    assert record.seed == 21 and record.scheduler == "FlowMatchEulerDiscreteScheduler"
    at.switch_page(GALLERY).run()
    at.button(key=f"open_{record.id}").click().run()
    at.button(key="verify").click().run()
    assert not at.exception
    assert any("identical" in s.value for s in at.success)
    assert not any("different setup" in w.value for w in at.warning)


def test_import_png_offers_its_settings(app, engine):
    """An uploaded PNG's parameters chunk is shown and Use these settings fills the form."""
    saved = _add(_store(), prompt="imported, with: punctuation", seed=777, num_inference_steps=9)
    png = _store().png_bytes(saved.id)
    at = app(GALLERY)
    at.file_uploader(key="import_png").set_value(("x.png", png, "image/png")).run()
    assert not at.exception
    assert "imported, with: punctuation" in [c.value for c in at.code]
    at.button(key="import_use").click().run()
    assert at.text_area(key="prompt").value == "imported, with: punctuation"
    assert at.number_input(key="seed").value == 777
    assert at.slider(key="steps").value == 9


def test_import_of_a_non_png_or_bare_png_is_explained(app):
    """A JPEG and a PNG without settings each get a clear error, not a crash."""
    import io

    at = app(GALLERY)
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    at.file_uploader(key="import_png").set_value(("x.jpg", jpeg.getvalue(), "image/jpeg")).run()
    assert any("not a PNG" in e.value for e in at.error)
    bare = io.BytesIO()
    Image.new("RGB", (8, 8)).save(bare, format="PNG")
    at.file_uploader(key="import_png").set_value(("y.png", bare.getvalue(), "image/png")).run()
    assert any("no generation settings" in e.value for e in at.error)
    assert not at.exception


def test_this_session_only_filter(app, engine):
    """ "This session only" hides images other sessions made."""
    store = _store()
    _add(store, prompt="made elsewhere", seed=1)
    mine = history.new_record(
        GenerationRequest(prompt="made here", seed=2, **SMALL),
        seed=2,
        facts=FACTS,
        session_id="this-session",
        duration_seconds=0.1,
    )
    store.save(Image.new("RGB", (64, 64)), mine)
    at = app(GALLERY)
    at.session_state["history_session_id"] = "this-session"
    at.run()
    assert {"made here", "made elsewhere"} <= set(_texts(at))
    at.toggle(key="gallery_mine").set_value(True).run()
    assert "made here" in _texts(at) and "made elsewhere" not in _texts(at)


def test_verify_warns_first_when_the_setup_differs(app, engine):
    """A record made on another device and dtype gets a warning naming them, then a pixel diff."""
    store = _store()
    facts = {**FACTS, "device": "cuda", "dtype": "float16", "torch_version": "0.0.1"}
    record = history.new_record(
        GenerationRequest(prompt="from elsewhere", seed=3, **SMALL),
        seed=3,
        facts=facts,
        session_id="other",
        duration_seconds=0.1,
    )
    saved = store.save(Image.new("RGB", (512, 512), (200, 10, 10)), record)
    at = app(GALLERY)
    at.button(key=f"open_{saved.id}").click().run()
    at.button(key="verify").click().run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any("different setup" in w for w in warnings)
    setup = "\n".join(t.value for t in at.text)  # recorded values are shown as plain text
    assert "device: recorded cuda" in setup and "dtype: recorded float16" in setup
    assert any("differ" in w and "pixels" in w for w in warnings)
    assert not any("identical" in s.value for s in at.success)


def test_pagination_and_search_at_10000_records(app, engine):
    """10,000 records: 417 pages, the last page reachable, search and seed filter exact."""
    import dataclasses

    from sqlalchemy import insert

    from core.history import schema

    rows = [
        dataclasses.asdict(
            history.new_record(
                GenerationRequest(prompt=f"number {i}", seed=i, **SMALL),
                seed=i,
                facts=FACTS,
                session_id="bulk",
                duration_seconds=0.1,
                created_at=1e9 + i,
            )
        )
        for i in range(10_000)
    ]
    store = _store()
    with store.engine.begin() as conn:  # rows only: their images draw as placeholders
        conn.execute(insert(schema.records), rows)
    at = app(GALLERY)
    assert not at.exception
    assert any("10000 images · page 1 of 417" in c.value for c in at.caption)
    assert "number 9999" in _texts(at)
    at.session_state["gallery_page"] = 417
    at.run()
    assert any("page 417 of 417" in c.value for c in at.caption)
    assert _texts(at).count("number 0") == 1
    at.text_input(key="gallery_search").input("number 4242").run()
    assert any("1 image" in c.value for c in at.caption)
    at.text_input(key="gallery_search").input("").run()
    at.number_input(key="gallery_seed").set_value(77).run()
    assert any("1 image" in c.value for c in at.caption) and "number 77" in _texts(at)
