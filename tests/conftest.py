"""Shared fixtures: the tiny real SD3 pipeline, isolated settings, and AppTest helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

APP_ROOT = Path(__file__).resolve().parent.parent
APP_FILE = str(APP_ROOT / "streamlit_app.py")
COMPILE_CACHE_ENV = (
    "TORCHINDUCTOR_CACHE_DIR",
    "TORCHINDUCTOR_FX_GRAPH_CACHE",
    "TORCHINDUCTOR_AUTOGRAD_CACHE",
)
SMALL = {"width": 512, "height": 512, "num_inference_steps": 2}  # the smallest valid image


def run_script(code: str, payload: Any, env: Mapping[str, str]) -> Any:
    """Run `code` in a fresh Python (in the app root, with `env`), `payload` as JSON in argv[1];
    return the JSON it printed after `RESULT` (a fresh process: no cache, no imported state)."""
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(payload)],
        cwd=APP_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line, proc.stderr[-3000:]
    return json.loads(line[len("RESULT") :])


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch, tmp_path):
    """Run every test on the demo model, a fresh data dir, and no developer `.env`."""
    import core.settings

    for name in list(core.settings._SETTINGS) + ["HF_HUB_OFFLINE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SD_MODEL", "demo")
    monkeypatch.setenv("SD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(core.settings, "DOTENV_PATH", tmp_path / "absent.env")
    # A compiled load points torch's compile cache at SD_DATA_DIR (core.compile): undo it.
    for name in COMPILE_CACHE_ENV:
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])  # restored as it was after the test
        else:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(name="demo_pipe", scope="session")
def fixture_demo_pipe():
    """The tiny random-weight SD3 pipeline in float32 (shared: read-only use only)."""
    from core.demo import build_demo_pipeline

    pipe = build_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(name="demo_dir", scope="session")
def fixture_demo_dir(tmp_path_factory) -> Path:
    """The demo pipeline saved with `save_pretrained`, for the real `from_pretrained` path."""
    from core.demo import save_demo_pipeline

    return save_demo_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd3")


@pytest.fixture(name="fresh_cache")
def fixture_fresh_cache():
    """Clear `st.cache_resource` around a test: it is process-wide across AppTests."""
    import streamlit as st

    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture(name="app")
def fixture_app(fresh_cache):
    """Return a factory for an AppTest of the whole app, opened on a given page."""
    from streamlit.testing.v1 import AppTest

    def make(page: str | None = None):
        at = AppTest.from_file(APP_FILE, default_timeout=120)
        at.run()
        if page is not None:
            at.switch_page(page).run()
        return at

    return make


def fill_small(at, *, prompt: str = "a red fox", seed: int = 7):
    """Fill the generator form for a fast, fixed-seed 512×512, 2-step generation."""
    at.text_area(key="prompt").input(prompt)
    at.checkbox(key="randomize_seed").uncheck()
    at.number_input(key="seed").set_value(seed)
    at.number_input(key="width").set_value(512)
    at.number_input(key="height").set_value(512)
    at.slider(key="steps").set_value(2)
    return at


# --- PostgreSQL ------------------------------------------------------------------------------
@pytest.fixture(name="pg_cluster", scope="session")
def fixture_pg_cluster():
    """One throwaway PostgreSQL server for the session (skipped only without the binaries)."""
    import os

    from testkit.pg import Cluster, find_bin

    bindir = find_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; .ci/run installs Debian's postgresql")
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    cluster = Cluster(bindir)
    cluster.start()
    yield cluster
    cluster.remove()


_databases = iter(range(10**6))


@pytest.fixture(name="pg_url")
def fixture_pg_url(pg_cluster):
    """A fresh, empty database on the session's server; its URL (with the password)."""
    from core import history

    name = f"t{next(_databases)}"
    pg_cluster.admin(f"CREATE DATABASE {name}")
    url = pg_cluster.url(name)
    yield url
    for key, store in list(history._STORES.items()):
        if key == ("url", url):
            store.engine.dispose()
            del history._STORES[key]
    pg_cluster.admin(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(name="engine", params=["sqlite", "postgresql"])
def fixture_engine(request, monkeypatch):
    """Run a test on each history engine: SQLite under SD_DATA_DIR, or SD_HISTORY_URL."""
    if request.param == "postgresql":
        monkeypatch.setenv("SD_HISTORY_URL", request.getfixturevalue("pg_url"))
    return request.param


def current_store(**options):
    """A store on what the app would open with the current settings (SD_DATA_DIR or URL)."""
    from core import history
    from core.settings import load_settings

    settings = load_settings()
    if settings.history_url:
        return history.HistoryStore(url=settings.history_url, **options)
    return history.HistoryStore(settings.data_dir, **options)


_GONE = object()


def replace_blob(store, record_id, *, png=_GONE, thumb=_GONE):
    """Overwrite (bytes) or remove (None) a stored image or thumbnail, on either engine:
    what an edited disk or database does to the history behind the app's back."""
    from sqlalchemy import update

    from core.history import schema

    if store.local:
        for data, path in (
            (png, store.image_path(record_id)),
            (thumb, store.thumb_path(record_id)),
        ):
            if data is None:
                path.unlink()
            elif data is not _GONE:
                path.write_bytes(data)
        return
    values = {k: v for k, v in (("png", png), ("thumb", thumb)) if v is not _GONE}
    if values.get("png", b"") is None:
        values["png"] = b""  # NOT NULL: an empty value is as gone as a missing file
    with store.engine.begin() as conn:
        conn.execute(update(schema.images).where(schema.images.c.id == record_id).values(values))
