"""Hostile input: no visitor's input and no outside answer can freeze, deface or crash the app.

Typed fields, shared links, uploads and outside answers (remote error bodies, model
folders) are driven through the real pages under AppTest, the real parser and a real
loopback HTTP server. Each case checks the message a visitor reads, that the page keeps
serving (no exception, the next run works) and that nothing is lost (records, form).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from core import history, metadata, safe_text
from core.generation import MAX_PROMPT_CHARS, GenerationRequest, InvalidRequest

from .conftest import APP_FILE, SMALL, fill_small
from .hostile import (
    SLOW_REGEX_INFOTEXT,
    bomb_png,
    jpeg_bytes,
    outside_code_spans,
    png_with_text,
    ztxt_bomb_png,
)

GALLERY = "pages/gallery.py"
HARDWARE = "pages/hardware.py"
FACTS = {"model": "demo", "model_revision": "demo", "device": "cpu", "dtype": "float32"}


def _store() -> history.HistoryStore:
    return history.HistoryStore(Path(os.environ["SD_DATA_DIR"]))


def _add_record(prompt: str = "kept before the attack", seed: int = 5):
    request = GenerationRequest(prompt=prompt, seed=seed, **SMALL)
    record = history.new_record(
        request, seed=seed, facts=FACTS, session_id="elsewhere", duration_seconds=88.069328516
    )
    return _store().save(Image.new("RGB", (64, 64), (seed, 0, 0)), record)


def _messages(at) -> list[str]:
    return [m.value for kind in (at.error, at.warning, at.info, at.success) for m in kind]


def _markdown(at) -> list[str]:
    """Every markdown body on the page: messages, captions, markdown blocks."""
    return _messages(at) + [c.value for c in at.caption] + [m.value for m in at.markdown]


def _link(fresh_cache, **params):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP_FILE, default_timeout=120)
    at.query_params.update(params)
    at.run()
    return at


def _still_serves_generator(at) -> None:
    """The page ran to the end: the form is there and no exception box was drawn."""
    assert not at.exception
    assert at.button(key="generate") is not None
    assert len(at.text_area(key="prompt").value) <= MAX_PROMPT_CHARS


# --- shared links (query parameters) --------------------------------------------------------
MARKUP = {
    "steps": "![](http://127.0.0.1:9/px.png)",
    "seed": "[Log in again](http://127.0.0.1:9/phish)",
    "width": ":red[**SESSION EXPIRED**]",
    "guidance_scale": '<img src=x onerror="alert(1)">',
    "num_images": "`code` then **bold** [x](javascript:alert(1))",
}


@pytest.mark.parametrize("key", list(MARKUP))
def test_markup_in_a_link_is_quoted_as_plain_text(fresh_cache, key):
    """A link value holding markdown/HTML is named inside a code span, never rendered."""
    at = _link(fresh_cache, **{key: MARKUP[key]})
    _still_serves_generator(at)
    (warning,) = [w.value for w in at.warning if "not valid" in w.value]
    assert "Ignored" in warning and "`" in warning
    rendered = outside_code_spans(warning)
    for token in ("](", "<img", ":red[", "**", "javascript"):
        assert token not in rendered, warning


def test_unknown_and_traversal_looking_params_are_ignored(fresh_cache):
    """Unknown keys and path-looking values change nothing and show nothing alarming."""
    at = _link(
        fresh_cache,
        **{"__proto__": "x", "../../etc/passwd": "1", "file": "/etc/passwd", "page": "../../.env"},
    )
    _still_serves_generator(at)
    assert not at.main.error and not [w for w in at.main.warning if "Ignored" in w.value]
    assert at.text_area(key="prompt").value == ""


def test_traversal_looking_prompt_is_only_text(fresh_cache):
    """A prompt that looks like a path is a prompt: taken as text, nothing is read."""
    at = _link(fresh_cache, prompt="../../../../etc/passwd", seed="../../etc/shadow")
    _still_serves_generator(at)
    assert at.text_area(key="prompt").value == "../../../../etc/passwd"
    assert any("Seed" in w.value and "0–2147483647" in w.value for w in at.warning)


def test_repeated_params_take_the_last_value(fresh_cache):
    """`?steps=5&steps=7` applies one value, the last, as browsers send it."""
    at = _link(fresh_cache, steps=["5", "7"])
    _still_serves_generator(at)
    assert at.slider(key="steps").value == 7


def test_huge_prompt_in_a_link_is_refused_with_the_limit(fresh_cache):
    """A link prompt over the one prompt limit is ignored with a message naming the limit."""
    at = _link(fresh_cache, prompt="a" * (MAX_PROMPT_CHARS + 1), seed="12")
    _still_serves_generator(at)
    assert any(f"limit is {MAX_PROMPT_CHARS:,}" in w.value for w in at.warning)
    assert at.text_area(key="prompt").value == ""
    assert at.number_input(key="seed").value == 12  # the rest of the link still applies


def test_huge_number_in_a_link_is_named_briefly(fresh_cache):
    """A 5000-digit seed is refused; the message quotes a short excerpt, not the value."""
    at = _link(fresh_cache, seed="9" * 5000, width="1" * 400)
    _still_serves_generator(at)
    warnings = [w.value for w in at.main.warning]
    assert len(warnings) == 2
    assert all(len(w) < 300 and "…" in w for w in warnings)


@pytest.mark.parametrize("value", ["nan", "inf", "-1e309", "1e309", "0x10", ""])
def test_non_finite_guidance_in_a_link_is_refused(fresh_cache, value):
    """NaN, infinities and odd spellings of a number get the valid range, not a crash."""
    at = _link(fresh_cache, guidance_scale=value)
    _still_serves_generator(at)
    assert any("Guidance scale" in w.value and "0–20" in w.value for w in at.warning)


# --- typed fields -----------------------------------------------------------------------------
def test_prompt_fields_show_the_one_limit(app):
    """Both prompt boxes carry the limit (the browser stops typing past it)."""
    at = app()
    assert at.text_area(key="prompt").max_chars == MAX_PROMPT_CHARS
    assert at.text_area(key="negative_prompt").max_chars == MAX_PROMPT_CHARS


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_request_refuses_a_prompt_over_the_limit(field):
    """The request itself refuses text past the limit, naming it (typed, linked or imported)."""
    with pytest.raises(InvalidRequest, match=f"limit is {MAX_PROMPT_CHARS:,}"):
        GenerationRequest(**{field: "x" * (MAX_PROMPT_CHARS + 1)}, **SMALL)
    GenerationRequest(**{field: "x" * MAX_PROMPT_CHARS}, **SMALL)  # the limit itself is fine


def test_typed_prompt_over_the_limit_never_reaches_a_generation(app):
    """A typed prompt past the limit is not taken by the form; Generate makes no such record."""
    at = app()
    _add_record()
    fill_small(at, prompt="z" * (MAX_PROMPT_CHARS + 5))
    assert len(at.text_area(key="prompt").value) <= MAX_PROMPT_CHARS
    at.button(key="generate").click().run()
    assert not at.exception
    assert all(len(r.prompt) <= MAX_PROMPT_CHARS for r in _store().page().records)
    assert _store().get(_store().page().records[-1].id) is not None  # nothing lost


def test_control_and_markup_characters_in_a_prompt_stay_text(app):
    """NUL, bidi overrides and markdown in a prompt generate, and show as typed, as text."""
    prompt = "a cat\x00 \u202egnp.exe **bold** ![](http://127.0.0.1:9/x.png)"
    at = fill_small(app(), prompt=prompt, seed=3)
    at.slider(key="steps").set_value(1)
    at.button(key="generate").click().run()
    assert not at.exception
    (record,) = _store().page().records
    assert record.prompt == prompt
    assert not any("x.png" in outside_code_spans(m) for m in _markdown(at))
    assert any(" · 1 step · " in s.value for s in at.success)  # not "1 steps"


# --- uploads through the gallery's Import ------------------------------------------------------
def _upload(app, name: str, data: bytes, mime: str = "image/png"):
    kept = _add_record()
    at = app(GALLERY)
    at.file_uploader(key="import_png").set_value((name, data, mime)).run()
    return at, kept


def _gallery_still_serves(at, kept) -> None:
    """No exception box, and the record made before the upload is still listed."""
    assert not at.exception
    assert _store().get(kept.id) is not None
    assert any("kept before the attack" in t.value for t in at.text)


def _real_png(**values) -> bytes:
    infotext = metadata.build_infotext(
        prompt=values.get("prompt", "a fine import"),
        negative_prompt="",
        steps=values.get("steps", 9),
        sampler="Euler",
        guidance_scale=4.5,
        seed=values.get("seed", 31),
        width=512,
        height=512,
        model="x",
    )
    return png_with_text(("parameters", infotext))


UPLOADS = {
    "not a PNG": (b"hello, I am text\n" * 10, "not a PNG"),
    "empty": (b"", "empty"),
    "JPEG renamed .png": (jpeg_bytes(), "JPEG"),
    "truncated": (None, "cut short"),
    "damaged CRC": (None, "checksum"),
    "decompression bomb": (None, "megapixels"),
    "zTXt bomb": (None, "longer than"),
    "huge text chunk": (None, "longer than"),
}


def _upload_bytes(case: str) -> bytes:
    data, _ = UPLOADS[case]
    if data is not None:
        return data
    if case == "truncated":
        whole = _real_png()
        return whole[: len(whole) // 2]
    if case == "damaged CRC":
        whole = bytearray(_real_png())
        whole[whole.index(b"parameters") + 12] ^= 0xFF
        return bytes(whole)
    if case == "decompression bomb":
        return bomb_png()
    if case == "zTXt bomb":
        return ztxt_bomb_png(50)
    return png_with_text(("parameters", "Steps: 2, " * 500_000))  # 5 MB of text


@pytest.mark.parametrize("case", list(UPLOADS))
def test_bad_upload_is_refused_with_a_clear_message(app, case):
    """Each malformed or hostile file gets one clear error; the page and the history live on."""
    at, kept = _upload(app, "x.png", _upload_bytes(case))
    _gallery_still_serves(at, kept)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and UPLOADS[case][1] in errors[0], errors
    # The same session imports a good file next: nothing stuck.
    at.file_uploader(key="import_png").set_value(("good.png", _real_png(), "image/png")).run()
    assert not at.exception and not at.error
    assert "a fine import" in [c.value for c in at.code]


def test_bomb_is_refused_without_decoding_it(monkeypatch):
    """The bomb never reaches Pillow's decoder: the size is read from its header."""
    import PIL.Image

    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(metadata.MetadataError, match="24000×24000"):
        metadata.parameters_from_png(bomb_png())


def test_slow_regex_infotext_is_refused_by_its_length(app):
    """The 300 KB infotext that froze the server is refused with the cap named."""
    at, kept = _upload(app, "slow.png", png_with_text(("parameters", SLOW_REGEX_INFOTEXT)))
    _gallery_still_serves(at, kept)
    assert any("at most 65,536" in e.value for e in at.error)


def test_slow_regex_infotext_under_the_cap_parses_as_a_long_prompt(app):
    """Under the cap the same shape parses at once; its prompt is over the limit and dropped."""
    text = "p\n" + "a" * 60_000
    at, kept = _upload(app, "slow.png", png_with_text(("parameters", text), kind=b"iTXt"))
    _gallery_still_serves(at, kept)
    assert any(f"limit is {MAX_PROMPT_CHARS:,}" in w.value for w in at.warning)


def test_parser_reads_the_crafted_shapes_in_one_pass():
    """Crafted shapes that backtrack in regex parsers parse, with A1111's results, at 2 MB."""
    assert (
        metadata.parse_parameters(SLOW_REGEX_INFOTEXT, limit=None)
        .values["prompt"]
        .startswith("p\na")
    )
    shapes = [
        "p\n" + "a" * 2_000_000,
        "p\n" + "Steps: " + '"' + "\\" * 2_000_000,
        "p\n" + "a: " * 700_000,
        "p\n" + " " * 2_000_000 + "x",
        "p\nSteps: 2, Sampler: Euler, Size: " + " " * 2_000_000 + "x",
    ]
    for text in shapes:
        metadata.parse_parameters(text, limit=None)  # finishes: linear, not quadratic


def test_malformed_a1111_values_are_named_with_their_ranges(app):
    """Garbage in each A1111 field: each is named with its range, the rest still imports."""
    text = (
        "a good prompt\nNegative prompt: [x](http://127.0.0.1:9/p)\n"
        'Steps: abc, Sampler: "unterminated, CFG scale: 1e999, Seed: -5, '
        "Size: 99999x1, Model: ![](http://127.0.0.1:9/px.png)"
    )
    at, kept = _upload(app, "a1111.png", png_with_text(("parameters", text)))
    _gallery_still_serves(at, kept)
    warnings = [w.value for w in at.warning]
    assert any("Seed" in w and "0–2147483647" in w for w in warnings)
    assert any("Width" in w and "512–1440" in w for w in warnings)
    assert "a good prompt" in [c.value for c in at.code]
    assert not any("px.png" in outside_code_spans(m) for m in _markdown(at))


@pytest.mark.parametrize(
    "text",
    [
        '{"prompt": 5, "negative_prompt": ["x"], "steps": [1, 2], "seed": "1e400"}',
        '{"prompt": "deep", "x": ' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"prompt": "big", "seed": ' + "9" * 5000 + "}",
        '{"prompt": "half',
    ],
    ids=["wrong types", "deep nesting", "5000-digit number", "cut JSON"],
)
def test_malformed_fooocus_json_is_handled(app, text):
    """Fooocus-style JSON with wrong types, deep nesting or huge numbers imports or is named."""
    at, kept = _upload(app, "fooocus.png", png_with_text(("parameters", text)))
    _gallery_still_serves(at, kept)
    assert at.code or at.error or at.warning


# --- outside answers: a remote service's error bodies -------------------------------------------
class _Echo(BaseHTTPRequestHandler):
    """Answer 500 with a body that echoes the request's headers, as a careless proxy does."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        auth = self.headers.get("Authorization", "")
        body = (
            f"Internal error. Request headers: Authorization: {auth}\n"
            "![](http://127.0.0.1:9/px.png) [Log in](http://127.0.0.1:9/phish) :red[**X**] "
            + "padding "
            * 200_000
        ).encode()
        self.send_response(500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(name="echo_server")
def fixture_echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def online(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.mark.parametrize("token", ["hf_AbCdEf0123456789secret", "my-own-endpoint-secret-42"])
def test_remote_error_body_is_a_short_redacted_excerpt(app, monkeypatch, echo_server, token):
    """A 500 body echoing `Bearer <token>` shows a short plain excerpt with the token removed."""
    monkeypatch.setenv("SD_BACKEND", "remote")
    monkeypatch.setenv("SD_REMOTE_URL", f"http://alice:pa55word@{echo_server[7:]}/run?key=k3y")
    monkeypatch.setenv("HF_TOKEN", token)
    _add_record()
    at = fill_small(app(), seed=1)
    at.button(key="generate").click().run()
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert "failed (500)" in error and "The service said:" in error
    assert token not in error and "[redacted]" in error
    assert len(error) < 600
    for secret in ("pa55word", "alice", "k3y"):
        assert secret not in error
    rendered = outside_code_spans(error)
    assert "](" not in rendered and ":red[" not in rendered
    assert _store().page().total == 1  # the failed request recorded nothing, lost nothing


def test_markup_in_sd_model_is_quoted_in_the_offline_load_error(app, monkeypatch):
    """SD_MODEL holding markdown is named in a code span in the load error, never rendered."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("SD_MODEL", ":red[**bad**]")
    at = fill_small(app(), seed=1)
    at.button(key="generate").click().run()
    assert not at.exception
    (error,) = [e.value for e in at.error if "cannot be reached" in e.value]
    assert "`:red[**bad**]`" in error
    rendered = outside_code_spans(error)
    assert ":red[" not in rendered and "**" not in rendered


def test_credentials_in_the_remote_url_are_never_shown_or_stored(app, monkeypatch, demo_pipe):
    """user:pass@ and ?key= values of SD_REMOTE_URL stay out of the page, records and PNGs."""
    from tests.loopback_server import TextToImageServer

    server = TextToImageServer(demo_pipe).start()
    try:
        url = f"http://bob:s3cretpass@{server.url[7:]}/?key=q-s3cret"
        monkeypatch.setenv("SD_BACKEND", "remote")
        monkeypatch.setenv("SD_REMOTE_URL", url)
        at = fill_small(app(), seed=4)
        at.button(key="generate").click().run()
        assert not at.exception
        assert server.requests[-1]["headers"]["authorization"].startswith("Basic ")
        (record,) = _store().page().records
        chunks = metadata.read_png_text(_store().png_bytes(record.id))
        stored = json.dumps([record.__dict__, chunks], ensure_ascii=False)
        page_text = " ".join(_markdown(at) + [t.value for t in at.text])
        for secret in ("s3cretpass", "q-s3cret", "bob"):
            assert secret not in stored and secret not in page_text
        assert f"{server.url}/?key=…" in stored
        at.switch_page(HARDWARE).run()
        assert not at.exception
        assert not any("s3cret" in m for m in _markdown(at))
    finally:
        server.stop()


def test_bad_remote_url_setting_does_not_echo_its_credentials(monkeypatch, app):
    """A malformed SD_REMOTE_URL is refused without repeating a password written in it."""
    monkeypatch.setenv("SD_BACKEND", "remote")
    monkeypatch.setenv("SD_REMOTE_URL", "carol:hunter2@host.example/run?token=abc")
    at = app()
    assert not at.exception
    assert any("is not a URL" in e.value for e in at.error)
    assert not any("hunter2" in m or "abc" in m for m in _markdown(at))


# --- outside answers: model folders ------------------------------------------------------------
def test_hardware_page_says_a_missing_model_folder_does_not_exist(app, monkeypatch):
    """SD_MODEL=/nonexistent: the Hardware page explains, instead of HFValidationError."""
    monkeypatch.setenv("SD_MODEL", "/nonexistent")
    at = app(HARDWARE)
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)


def _broken_copy(demo_dir: Path, tmp_path: Path, how: str) -> Path:
    folder = tmp_path / f"broken-{how}"
    shutil.copytree(demo_dir, folder)
    if how == "bad index":
        (folder / "model_index.json").write_text('{"_class_name": "StableDiffusion3Pip')
    elif how == "missing config":
        (folder / "transformer" / "config.json").unlink()
    else:  # damaged weights
        weights = next((folder / "vae").glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:100])
    return folder


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("bad index", "model_index.json that cannot be read"),
        ("missing config", "is incomplete"),
        ("damaged weights", "could not be loaded"),
    ],
)
def test_broken_model_folder_is_explained_on_generate(
    app, monkeypatch, demo_dir, tmp_path, how, message
):
    """A damaged local pipeline folder gets a message naming the problem and the fix."""
    folder = _broken_copy(demo_dir, tmp_path, how)
    monkeypatch.setenv("SD_MODEL", str(folder))
    _add_record()
    at = fill_small(app(), seed=2)
    at.button(key="generate").click().run()
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert _store().page().total == 1
    at.switch_page(HARDWARE).run()  # the Hardware page gives the same explanation
    assert not at.exception
    assert any(message in m for m in _messages(at)), _messages(at)


# --- server paths -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ip", "setting", "visible"),
    [
        (None, "auto", True),
        ("127.0.0.1", "auto", True),
        ("::1", "auto", True),
        ("10.1.2.3", "auto", False),
        ("2001:db8::1", "auto", False),
        ("not an ip", "auto", False),
        ("10.1.2.3", "always", True),
        (None, "never", False),
    ],
)
def test_paths_are_shown_only_to_a_visitor_on_this_machine(ip, setting, visible):
    """The one rule: loopback visitors see server paths, others do not (SD_SHOW_PATHS wins)."""
    assert safe_text.paths_visible(ip, setting=setting) is visible


def test_remote_visitor_sees_no_server_paths(app, monkeypatch, tmp_path):
    """With paths hidden, the sidebar, Hardware page and errors name folders, not paths."""
    secret_dir = tmp_path / "srv-secret-models" / "sd35"
    monkeypatch.setenv("SD_MODEL", str(secret_dir))
    monkeypatch.setenv("SD_SHOW_PATHS", "never")
    at = app(HARDWARE)
    assert not at.exception
    shown = " ".join(_markdown(at) + [t.value for t in at.text] + [c.value for c in at.code])
    assert "srv-secret-models" not in shown and str(tmp_path) not in shown
    assert "the model folder" in shown and "does not exist" in shown
    monkeypatch.setenv("SD_SHOW_PATHS", "always")
    at.run()
    assert any("srv-secret-models" in e.value for e in at.error)


# --- cosmetics --------------------------------------------------------------------------------
def test_unload_draws_the_page_again_with_the_message(app):
    """Unload reruns the script (so the sidebar, drawn first, is current) and says so once."""
    at = app(HARDWARE)
    at.button(key="load_model").click().run()
    at.button(key="unload_model").click().run()
    assert not at.exception
    assert any("unloaded" in s.value for s in at.success)
    assert "- **State:** not loaded" in "\n".join(m.value for m in at.markdown)
    at.run()
    assert not any("unloaded" in s.value for s in at.success)  # shown once, not forever


def test_gallery_details_show_durations_rounded(app):
    """The details list shows `duration_seconds  88.1 s`, not 88.06932851600004."""
    kept = _add_record()
    at = app(GALLERY)
    at.button(key=f"open_{kept.id}").click().run()
    details = "\n".join(c.value for c in at.code)
    assert "88.1 s" in details and "88.069" not in details


def test_messages_name_folders_not_paths_for_remote_visitors(caplog):
    """A history error shown to a remote visitor names "the data folder"; the log has the path."""
    from core.settings import load_settings

    settings = load_settings()
    message = f"Could not read the history in {settings.data_dir}: [Errno 13] Permission denied."
    shown = safe_text.for_visitor(message, settings=settings, visible=False)
    assert str(settings.data_dir) not in shown and "<the data folder>" in shown
    assert str(settings.data_dir) in caplog.text
    assert safe_text.for_visitor(message, settings=settings, visible=True) == message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://u:p@host.example:8443/run?key=abc&x=1#frag",
            "https://host.example:8443/run?key=…&x=…",
        ),
        ("http://tok@[::1]:9/a", "http://[::1]:9/a"),
        ("http://u:p@host:notaport/x?k=1", "http://host:notaport/x"),
        ("u:p@host/x?k=v", "host/x"),
    ],
)
def test_display_url_drops_credentials(url, shown):
    """User-info and query values never survive into what is shown or stored."""
    assert safe_text.display_url(url) == shown
