"""Shared fixtures: the tiny real SD3 pipeline, isolated settings, AppTest helpers, and the
one Chromium the browser tests share."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from testkit.child import run_child

APP_ROOT = Path(__file__).resolve().parent.parent
APP_FILE = str(APP_ROOT / "streamlit_app.py")
COMPILE_CACHE_ENV = (
    "TORCHINDUCTOR_CACHE_DIR",
    "TORCHINDUCTOR_FX_GRAPH_CACHE",
    "TORCHINDUCTOR_AUTOGRAD_CACHE",
)
SMALL = {"width": 512, "height": 512, "num_inference_steps": 2}  # the smallest valid image

# One torch (OpenMP) thread per process, set before anything imports torch; the app servers,
# loaders and workers the tests start inherit it. `make test` runs test files in parallel on
# two cores beside those processes, so a second thread per process mostly spins: the tiny
# pipeline's 512², 2-step image took 1.23 s of CPU with torch's two threads and 0.24 s with
# one on the busy machine (same pixels). An OMP_NUM_THREADS already set is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Browser tests live in tests/test_e2e_*.py. Under pytest-xdist (`make test`) all of them run
# on one worker, in file order, so that worker launches Chromium once for all of them
# (`fixture_chromium`) and a module's server and tab serve its tests in order.
BROWSER_FILES = "test_e2e_"
BROWSER_GROUP = "browser"
BROWSER_TIMEOUT_MS = 120_000  # generous: the machine running the suite may be busy


def run_script(code: str, payload: Any, env: Mapping[str, str]) -> Any:
    """Run `code` in a fresh Python (in the app root, with `env`), `payload` as JSON in argv[1];
    return the JSON it printed after `RESULT` (a fresh process: no cache, no imported state)."""
    return run_child(code, json.dumps(payload), env=env, timeout=300)


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


# --- the browser ---------------------------------------------------------------------------
def _is_browser_test(nodeid: str) -> bool:
    return Path(nodeid.split("::", 1)[0]).name.startswith(BROWSER_FILES)


def pytest_collection_modifyitems(items):
    """A test that uses the shared Chromium must sit in a browser file (see BROWSER_FILES)."""
    for item in items:
        if "chromium" in item.fixturenames and not _is_browser_test(item.nodeid):
            raise pytest.UsageError(
                f"{item.nodeid} uses the shared browser: move it to a tests/{BROWSER_FILES}*.py "
                "file, where the browser tests run on one worker and share one Chromium"
            )


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own choice
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup`, with every browser test in one group (BROWSER_GROUP).

    Other tests are spread one by one, as `--dist load` does. The group is made here from the
    file name because pytest 9.2 ignores the `xdist_group` mark (pytest-xdist 3.8 renames
    node ids to carry it, which pytest 9.2 no longer reads: pytest-xdist issue #1386).
    Larger groups go out first, so the browser worker starts on its long run at once.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class BrowserGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return BROWSER_GROUP if _is_browser_test(nodeid) else super()._split_scope(nodeid)

    return BrowserGroupScheduling(config, log)


@pytest.fixture(name="chromium", scope="session")
def fixture_chromium():
    """Headless Debian Chromium, launched once per test process and shared by every browser
    test: each module opens its own context on it (own cookies and storage) and closes it.
    Browser tests skip themselves where `chromium` is missing; this never downloads one."""
    from playwright.sync_api import expect, sync_playwright

    from bench.common import CHROMIUM_ARGS

    # `expect` waits as long as a page action does (tests set that on their pages): 5 s, its
    # default, is shorter than one script run on a busy machine. A wait is no timed assertion.
    expect.set_options(timeout=BROWSER_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(name="demo_app", scope="session")
def fixture_demo_app(tmp_path_factory):
    """`streamlit run` on the demo model with a fresh data dir, started once per test process
    and shared by the browser modules that need no other settings (test_e2e_browser and
    test_e2e_hostile). Each opens its own tab, a new Streamlit session; a module that
    restarts the server leaves it running. What one leaves behind (the model loaded or not,
    its own history entries) is what any earlier visitor could leave: no test relies on its
    absence."""
    from tests.test_e2e_browser import StreamlitServer

    root = tmp_path_factory.mktemp("e2e-app")
    server = StreamlitServer(data_dir=root / "data", log_path=root / "streamlit.log")
    server.start()
    yield server
    server.stop()


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


# What migration 0006 (grids, LoRAs, styles) added, undone: for tests that rewind a
# history to an older version and watch it upgrade again.
UNDO_0006 = (
    "DROP INDEX records_grid",
    "ALTER TABLE records DROP COLUMN loras",
    "ALTER TABLE records DROP COLUMN styles",
    "ALTER TABLE records DROP COLUMN grid_id",
    "ALTER TABLE records DROP COLUMN grid_cell",
    "DROP TABLE grids",
    "DROP TABLE styles",
)

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
