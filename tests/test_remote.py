"""The remote backend end to end: InferenceClient → a loopback text-to-image server → tiny SD3."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import uuid
from urllib.parse import urlencode

import pytest
from PIL import Image

from core.generation import GenerationError, GenerationRequest, GenerationStopped, Progress
from core.remote import (
    RemoteBackend,
    RemoteCall,
    backoff_delay,
    parse_retry_after,
    summarize_latencies,
)
from core.safe_text import display_url
from core.settings import SettingsError, load_settings
from testkit.loopback_server import TextToImageServer
from tests.conftest import APP_ROOT, SMALL, fill_small


@pytest.fixture(name="server", scope="session")
def fixture_server():
    """A loopback text-to-image server with its own tiny pipeline (a separate "machine")."""
    from core.demo import build_demo_pipeline

    pipe = build_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    server = TextToImageServer(pipe).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """Let huggingface_hub make requests even if HF_HUB_OFFLINE was set when it was imported."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def endpoint(server: TextToImageServer, **query: object) -> str:
    """The server's URL with misbehaviour flags and a key unique to this call."""
    query.setdefault("key", uuid.uuid4().hex)
    return f"{server.url}/?{urlencode(query)}"


def requests_to(server: TextToImageServer, url: str) -> list[dict]:
    path = url.removeprefix(server.url)
    return [r for r in server.requests if r["path"] == path]


def small(**overrides) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red fox", "seed": 7, **SMALL, **overrides})


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_same_seed_gives_local_pixels_through_the_remote_path(server, demo_pipe):
    """A remote image is pixel-identical to the local pipeline's for the same seed, every time."""
    from core.local import run_pipeline

    backend = RemoteBackend(url=endpoint(server), model="demo")
    first = backend.generate(small())
    again = backend.generate(small())
    local, _ = run_pipeline(demo_pipe, small())
    assert first.images[0].tobytes() == again.images[0].tobytes() == local[0].tobytes()
    assert first.images[0].size == (512, 512)
    other = backend.generate(small(seed=8))
    assert other.images[0].tobytes() != first.images[0].tobytes()


def test_request_follows_the_text_to_image_protocol(server):
    """The client POSTs inputs + parameters (with the seed) as JSON to the URL, with the token."""
    url = endpoint(server)
    backend = RemoteBackend(url=url, model="demo", token_provider=lambda: "hf_test")
    backend.generate(small(negative_prompt="blurry", guidance_scale=3.5))
    (sent,) = requests_to(server, url)
    assert sent["body"] == {
        "inputs": "a red fox",
        "parameters": {
            "negative_prompt": "blurry",
            "width": 512,
            "height": 512,
            "num_inference_steps": 2,
            "guidance_scale": 3.5,
            "seed": 7,
        },
    }
    assert sent["headers"]["authorization"] == "Bearer hf_test"
    assert sent["headers"]["accept"] == "image/png"


def test_batch_is_one_call_per_seed_with_timings(server):
    """Two images are two calls with seeds s, s+1, each timed and recorded, with the identity."""
    url = endpoint(server)
    backend = RemoteBackend(url=url, model="demo")
    result = backend.generate(small(seed=41, num_images=2))
    assert [r["body"]["parameters"]["seed"] for r in requests_to(server, url)] == [41, 42]
    assert result.seeds == (41, 42)
    assert len(result.images) == len(result.per_image_seconds) == 2
    assert result.images[0].tobytes() != result.images[1].tobytes()
    assert result.backend == "remote"
    assert result.details == {
        "backend": "remote",
        "model": "demo",
        "endpoint": display_url(url),
        "reproducible": "not guaranteed",
    }
    assert [(c.width, c.steps) for c in backend.recent_calls()] == [(512, 2), (512, 2)]


def test_progress_reports_elapsed_time_and_image_index(server):
    """Progress while requesting counts images done, with no steps."""
    seen: list[Progress] = []
    RemoteBackend(url=endpoint(server), model="demo").generate(
        small(num_images=2), on_progress=seen.append
    )
    assert {p.phase for p in seen} == {"requesting"}
    assert [p.image_index for p in seen][0] == 0 and seen[-1].image_index == 1
    assert seen[-1].fraction == 0.5


@pytest.mark.parametrize(
    ("query", "token", "message"),
    [
        ({"status": 401}, None, "HF_TOKEN is not set"),
        ({"status": 401}, "hf_bad", "HF_TOKEN was refused"),
        ({"status": 403}, "hf_x", "lacks access"),
        ({"status": 404}, None, "does not serve this model (404)"),
        ({"status": 429, "retry_after": 120}, None, "Try again in 2 min"),
        ({"status": 500}, None, "failed (500)"),
        ({"body": "html"}, None, "not with an image"),
    ],
)
def test_error_statuses_explain_the_fix_and_record_nothing(server, query, token, message):
    """Each failure the service can answer becomes a GenerationError saying what to do."""
    backend = RemoteBackend(
        url=endpoint(server, **query), model="demo", token_provider=lambda: token
    )
    with pytest.raises(GenerationError, match=re.escape(message)):
        backend.generate(small())
    assert backend.recent_calls() == ()


def test_vary_runs_through_the_service_image_to_image_task(server, demo_pipe):
    """With SD_REMOTE_IMAGE_TO_IMAGE on, a Vary is one `image_to_image` call per seed: the
    source PNG, prompt, strength and seed reach the service, and the answer is the service's
    image-to-image of that source (the tiny pipeline's, pixel for pixel), the same again on
    a repeat. Inpaint is refused before anything is sent."""
    import base64

    from core.image_modes import prompt_embeddings, run_image_mode
    from core.sources import from_image

    url = endpoint(server)
    backend = RemoteBackend(url=url, model="demo", image_to_image=True)
    assert "img2img" in backend.modes and "inpaint" not in backend.modes
    made = backend.generate(small()).images[0]
    vary = small(mode="img2img", source=from_image(made), mode_options={"strength": 1.0})
    first = backend.generate(vary).images[0]
    again = backend.generate(vary).images[0]
    sent = requests_to(server, url)[-1]["body"]
    assert Image.open(io.BytesIO(base64.b64decode(sent["inputs"]))).tobytes() == made.tobytes()
    params = sent["parameters"]
    assert (params["prompt"], params["strength"], params["seed"]) == ("a red fox", 1.0, 7)
    embeds = prompt_embeddings(demo_pipe, prompt="a red fox", guidance_scale=4.5)
    local = run_image_mode(
        demo_pipe, mode="img2img", embeds=embeds, image=made, seed=7, steps=2,
        guidance_scale=4.5, strength=1.0,
    )  # fmt: skip
    assert first.tobytes() == again.tobytes() == local.image.tobytes()
    assert first.tobytes() != made.tobytes()
    calls = len(server.requests)
    with pytest.raises(GenerationError, match="local backend only"):
        backend.generate(small(mode="inpaint", source=from_image(made), mask=from_image(made)))
    assert len(server.requests) == calls


def test_an_endpoint_that_makes_images_from_text_only_says_so(server):
    """Without SD_REMOTE_IMAGE_TO_IMAGE an endpoint URL offers text to image only and a Vary
    is refused before sending; with it on, an endpoint that refuses image to image (422) is
    said plainly, with the setting that stops offering it."""
    from core.sources import from_image

    made = RemoteBackend(url=endpoint(server), model="demo").generate(small()).images[0]
    vary = small(mode="img2img", source=from_image(made))
    plain = RemoteBackend(url=endpoint(server), model="demo")
    assert plain.modes == ("txt2img",)
    with pytest.raises(GenerationError, match="from text only"):
        plain.generate(vary)
    refusing = RemoteBackend(url=endpoint(server, text_only=1), model="demo", image_to_image=True)
    with pytest.raises(GenerationError, match="SD_REMOTE_IMAGE_TO_IMAGE=false"):
        refusing.generate(vary)


@pytest.mark.parametrize("side", [24_000, 5_000], ids=["Pillow's bomb", "over our cap"])
def test_oversized_answer_is_refused_before_decoding(server, side):
    """An answer too large to decode safely is a clear message, never a crash or a decode."""
    # "side…": URL query values are redacted from messages as possible secrets.
    backend = RemoteBackend(url=endpoint(server, bomb=f"side{side}"), model="demo")
    with pytest.raises(GenerationError, match="too large to open safely") as raised:
        backend.generate(small())
    assert "megapixels" in str(raised.value)
    assert (f"{side}×{side}" in str(raised.value)) == (side == 5_000)  # Pillow's gives no size
    assert backend.recent_calls() == ()


def test_timeout_is_explained(server):
    """A service slower than the timeout gives a timeout message, not a hang."""
    backend = RemoteBackend(url=endpoint(server, delay=3, status=500), model="demo", timeout=0.5)
    with pytest.raises(GenerationError, match="did not answer within"):
        backend.generate(small())
    assert backend.recent_calls() == ()


def test_unreachable_endpoint_is_explained():
    """A URL nobody listens on says it could not connect and names SD_REMOTE_URL."""
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = RemoteBackend(url=f"http://127.0.0.1:{port}/", model="demo")
    with pytest.raises(GenerationError, match="Could not connect.*SD_REMOTE_URL"):
        backend.generate(small())


def test_scaling_up_endpoint_is_waited_out_with_a_countdown(server):
    """503 while an endpoint scales from zero is retried after Retry-After, counting down."""
    url = endpoint(server, status=503, fail=1, retry_after=1)
    seen: list[Progress] = []
    result = RemoteBackend(url=url, model="demo").generate(small(), on_progress=seen.append)
    waiting = [p for p in seen if p.phase == "waiting"]
    assert waiting and waiting[0].retry_in > 0.5 and "starting up" in waiting[0].detail
    assert len(requests_to(server, url)) == 2
    assert result.queue_seconds == 1.0  # the wait is reported apart from generation time


def test_endpoint_that_never_wakes_up_gives_up_with_the_fix(server):
    """503 beyond the wait budget ends in an error suggesting a minimum replica."""
    url = endpoint(server, status=503, retry_after=0)
    backend = RemoteBackend(url=url, model="demo", max_wait=0)
    with pytest.raises(GenerationError, match="not ready \\(503\\).*minimum replicas"):
        backend.generate(small())


def test_short_rate_limit_is_waited_out_once(server):
    """A 429 asking for a few seconds is retried once, then succeeds."""
    url = endpoint(server, status=429, fail=1, retry_after=0)
    result = RemoteBackend(url=url, model="demo").generate(small())
    assert len(result.images) == 1
    assert len(requests_to(server, url)) == 2


def test_stop_abandons_the_request_and_drops_the_late_answer(server):
    """Stop ends the wait at once; the answer arriving later is discarded and not recorded."""
    url = endpoint(server, delay=1)
    backend = RemoteBackend(url=url, model="demo")
    in_flight = lambda: bool(requests_to(server, url))  # noqa: E731 - the server has it
    with pytest.raises(GenerationStopped, match="abandoned"):
        backend.generate(small(), should_stop=in_flight)
    path = url.removeprefix(server.url)
    for _ in range(200):  # let the late answer arrive before checking it was dropped
        if path in server.answered:
            break
        time.sleep(0.05)
    assert path in server.answered
    assert backend.recent_calls() == ()


def test_describe_shows_identity_token_and_latency(server):
    """describe() gives the hardware page endpoint, model, token state and recent latency."""
    backend = RemoteBackend(url=endpoint(server), model="demo", token_provider=lambda: "hf_x")
    assert dict(backend.describe().rows)["Calls recorded"] == "none yet"
    assert backend.state == "nothing to load" and backend.load_async().done()
    backend.generate(small())
    facts = backend.describe()
    rows = dict(facts.rows)
    assert rows["Calls recorded"] == "1" and rows["Last call"].endswith(" s")
    assert rows["HF token"] == "set" and "hf_x" not in str(facts)
    assert rows["Endpoint"] == facts.endpoint
    assert rows["Identical pixels for a seed"] == "not guaranteed"


def test_remote_backend_answers_the_whole_contract_truthfully():
    """Nothing to load, cancel or unload; no memory plan, queue or preview; text-to-image."""
    from core.generation import BackendState

    backend = RemoteBackend(url="http://127.0.0.1:9/", model="demo")
    assert backend.state is BackendState.NOTHING_TO_LOAD and backend.state.ready
    assert backend.ensure_loaded() is None and backend.load_async().result() is None
    assert backend.cancel_load() is False and backend.unload() is False
    assert backend.loaded_facts is None and backend.queue is None
    assert backend.last_load_error is None and backend.load_progress().fraction == 0.0
    assert backend.supports_preview is False and backend.modes == ("txt2img",)
    assert backend.describe().identity() == backend.identity()


def test_provider_mode_names_the_provider():
    """With SD_PROVIDER the identity names the provider, not an endpoint."""
    backend = RemoteBackend(provider="fal-ai", model="stabilityai/stable-diffusion-3.5-medium")
    assert backend.identity()["provider"] == "fal-ai"
    assert "endpoint" not in backend.identity()
    assert RemoteBackend(model="m").identity()["provider"] == "auto"


def test_provider_without_token_asks_for_one(monkeypatch, tmp_path):
    """An Inference Provider without HF_TOKEN says to create one (no request is made)."""
    # No saved login to fall back on.
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "token"))
    backend = RemoteBackend(provider="fal-ai", model="stabilityai/stable-diffusion-3.5-medium")
    monkeypatch.setattr(
        "huggingface_hub.inference._providers._common.TaskProviderHelper._prepare_mapping_info",
        lambda self, model: pytest.fail("must not reach the Hub"),
    )
    with pytest.raises(GenerationError, match="HF_TOKEN is not set"):
        backend.generate(small())


def test_retry_after_and_backoff():
    """Retry-After reads seconds and HTTP dates; the scale-up backoff doubles up to 30 s."""
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert [backoff_delay(a) for a in range(6)] == [2, 4, 8, 16, 30, 30]


def test_latency_summary():
    """The summary shows count, last, median and slowest call."""
    calls = [RemoteCall(0, s, 512, 512, 2) for s in (1.0, 3.0, 2.0)]
    assert summarize_latencies(calls) == {
        "calls": "3",
        "last_call": "2.0 s",
        "median_call": "2.0 s",
        "slowest_call": "3.0 s",
    }


def test_remote_settings_are_read_and_checked():
    """SD_BACKEND/SD_REMOTE_URL/SD_PROVIDER are read; impossible combinations are refused."""
    env = {"SD_BACKEND": "remote", "SD_REMOTE_URL": "https://x.endpoints.huggingface.cloud"}
    settings = load_settings(environ=env)
    assert (settings.backend, settings.remote_url, settings.provider) == (
        "remote",
        env["SD_REMOTE_URL"],
        None,
    )
    assert load_settings(environ={}).backend == "local"
    with pytest.raises(SettingsError, match="local, remote"):
        load_settings(environ={"SD_BACKEND": "cloud"})
    with pytest.raises(SettingsError, match="not a URL"):
        load_settings(environ={"SD_REMOTE_URL": "x.endpoints.huggingface.cloud"})
    with pytest.raises(SettingsError, match="not both"):
        load_settings(environ={**env, "SD_PROVIDER": "fal-ai"})
    with pytest.raises(SettingsError, match="SD_MODEL=demo"):
        load_settings(environ={"SD_BACKEND": "remote", "SD_PROVIDER": "fal-ai", "SD_MODEL": "demo"})


def test_service_returns_the_remote_backend_in_remote_mode(monkeypatch, fresh_cache):
    """get_backend() gives one shared RemoteBackend in remote mode."""
    from core.service import get_backend

    monkeypatch.setenv("SD_BACKEND", "remote")
    monkeypatch.setenv("SD_REMOTE_URL", "http://127.0.0.1:9/")
    backend = get_backend()
    assert isinstance(backend, RemoteBackend) and backend is get_backend()
    assert backend.url == "http://127.0.0.1:9/"


def test_generate_page_runs_remotely(server, monkeypatch, app, demo_pipe):
    """The generator page makes the same image through the remote backend as locally."""
    from core.history import pixel_sha256
    from core.local import run_pipeline

    url = endpoint(server)
    monkeypatch.setenv("SD_BACKEND", "remote")
    monkeypatch.setenv("SD_REMOTE_URL", url)
    at = fill_small(app("pages/generate.py"), seed=7)
    at.button(key="generate").click().run()
    assert not at.exception and not at.error
    result = at.session_state["last_result"]
    local, _ = run_pipeline(demo_pipe, small(seed=7))
    assert result.sha256 == (pixel_sha256(local[0]),)
    assert result.backend == "remote" and result.details["endpoint"] == display_url(url)


def test_sidebar_names_the_remote_service(monkeypatch, app):
    """The sidebar says generation runs remotely, and where."""
    monkeypatch.setenv("SD_BACKEND", "remote")
    monkeypatch.setenv("SD_REMOTE_URL", "http://127.0.0.1:9/")
    at = app()
    assert not at.exception
    assert "Remote: `http://127.0.0.1:9/`" in [c.value for c in at.sidebar.caption]


def test_generate_page_shows_remote_error_and_keeps_nothing(server, monkeypatch, app):
    """A refused token shows the remedy on the page, and no result is kept."""
    monkeypatch.setenv("SD_BACKEND", "remote")
    monkeypatch.setenv("SD_REMOTE_URL", endpoint(server, status=403))
    at = fill_small(app("pages/generate.py"))
    at.button(key="generate").click().run()
    assert not at.exception
    assert "lacks access" in at.error[0].value
    assert "last_result" not in at.session_state


def test_local_mode_without_torch_says_to_go_remote(monkeypatch):
    """On the light install, local mode fails on load with the way to remote mode."""
    import importlib.util

    from core.local import load_pipeline

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(GenerationError, match="torch not installed.*SD_BACKEND=remote"):
        load_pipeline(model="demo")


def test_remote_path_works_without_torch_or_diffusers(server):
    """With torch/diffusers/transformers unimportable, the app's core imports and generates."""
    script = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "diffusers", "transformers"}:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
sys.meta_path.insert(0, Block())
from core.service import get_backend
from core.generation import GenerationRequest
backend = get_backend()
result = backend.generate(GenerationRequest(prompt="fox", seed=3, width=512, height=512,
                                            num_inference_steps=2))
assert result.images[0].size == (512, 512), result.images[0].size
print("ok", result.backend, sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
"""
    env = {
        **os.environ,
        "SD_BACKEND": "remote",
        "SD_REMOTE_URL": endpoint(server),
        "HF_HUB_OFFLINE": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=APP_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok remote []"


def test_hardware_page_shows_the_remote_service(server, monkeypatch, app):
    """In remote mode the Hardware page names the endpoint instead of offering a local load."""
    url = endpoint(server)
    monkeypatch.setenv("SD_BACKEND", "remote")
    monkeypatch.setenv("SD_REMOTE_URL", url)
    at = app("pages/hardware.py")
    assert not at.exception
    assert "Remote backend" in [h.value for h in at.subheader]
    assert not [b for b in at.button if b.key == "load_model"]
    assert any(f"`{display_url(url)}`" in m.value for m in at.markdown)


def test_history_records_which_service_made_the_image(server, monkeypatch, app, tmp_path):
    """A remote generation is saved with backend "remote" and the endpoint that made it."""
    from core.history import open_store
    from core.settings import load_settings

    url = endpoint(server)
    monkeypatch.setenv("SD_BACKEND", "remote")
    monkeypatch.setenv("SD_REMOTE_URL", url)
    at = fill_small(app("pages/generate.py"), seed=3)
    at.button(key="generate").click().run()
    (record,) = open_store(load_settings().data_dir).page(1).records
    assert (record.backend, record.seed) == ("remote", 3)
    assert record.model_revision == f"remote {display_url(url)}"


def test_skip_layer_guidance_is_refused_before_any_call(server):
    """The text-to-image task takes no SLG: a request with SLG on (and guidance on) is refused
    with the local-only words before any call, so no record says SLG ran when it did not;
    with guidance off SLG would not run anyway, and the call goes out."""
    backend = RemoteBackend(url=endpoint(server), model="demo")
    on = {"slg": "layers 1; scale 2.8; start 0.01; stop 0.2"}
    with pytest.raises(GenerationError, match="runs on the local pipeline only"):
        backend.generate(GenerationRequest(**SMALL, guidance_scale=4.5, mode_options=on))
    assert backend.recent_calls() == ()
    backend.generate(GenerationRequest(**SMALL, guidance_scale=0.0, mode_options=on))
    assert len(backend.recent_calls()) == 1
