"""Several app processes on one history database (issue 11), against real servers.

OS processes stand in for app replicas: each opens its own store on the same URL, as a
second `streamlit run` would.
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image
from sqlalchemy import select

from core import history
from core.history import schema

from .conftest import APP_ROOT

GALLERY = "pages/gallery.py"


def _worker(url: str, count: int, tag: str, side: int = 512) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.history_worker", url, str(count), tag, str(side)],
        cwd=APP_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def _assert_intact(store) -> list:
    """Every visible record has its image, and the image's pixels match the record's hash."""
    records = list(store.iter_records())
    for record in records:
        png = store.png_bytes(record.id)
        assert png is not None, record.id
        with Image.open(io.BytesIO(png)) as image:
            assert history.pixel_sha256(image) == record.image_sha256
    return records


def _sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'shared' / history.DB_NAME}"


@pytest.fixture(name="shared_url", params=["postgresql", "sqlite"])
def fixture_shared_url(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    (tmp_path / "shared").mkdir()
    return _sqlite_url(tmp_path)


def test_two_processes_saving_20_each_at_once_leave_40_intact_records(shared_url):
    """Two processes saving 20 records each at the same time: 40 records, every image intact."""
    workers = [_worker(shared_url, 20, tag) for tag in ("left", "right")]
    for worker in workers:  # start both together
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0]
    assert sum(line.startswith("saved ") for out in outputs for line in out.splitlines()) == 40
    store = history.HistoryStore(url=shared_url)
    records = _assert_intact(store)
    assert len(records) == 40 and len({r.id for r in records}) == 40
    assert {r.session_id for r in records} == {"left", "right"}


def test_kill_9_mid_save_leaves_no_half_record(shared_url):
    """SIGKILL at spread-out moments while saving large images: every visible record is whole."""
    announced: set[str] = set()
    for delay in (0.05, 0.2, 0.35, 0.5):  # encoding, writing, committing: somewhere in a save
        worker = _worker(shared_url, 200, "killed", side=1024)
        worker.stdin.write("go\n")
        worker.stdin.flush()
        announced |= {worker.stdout.readline().split()[1] for _ in range(2)}
        time.sleep(delay)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    store = history.HistoryStore(url=shared_url)
    records = _assert_intact(store)
    assert announced <= {r.id for r in records}
    if not store.local:  # no image bytes without a row either, read in one snapshot: the
        # server side of a killed client may still be finishing a COMMIT it was sent, so
        # two separate reads could see the row missing and then its bytes arrive
        snapshot = store.engine.connect().execution_options(isolation_level="REPEATABLE READ")
        with snapshot as conn, conn.begin():
            row_ids = set(conn.execute(select(schema.records.c.id)).scalars())
            blob_ids = set(conn.execute(select(schema.images.c.id)).scalars())
        assert blob_ids == row_ids
        assert {r.id for r in records} <= row_ids


def test_restart_with_an_empty_data_dir_shows_every_record(app, pg_url, monkeypatch, tmp_path):
    """The Community Cloud case: a fresh container (empty SD_DATA_DIR), same URL, all there."""
    worker = _worker(pg_url, 5, "before-restart")
    worker.stdin.write("go\n")
    worker.communicate(timeout=120)
    empty = tmp_path / "fresh-container"
    monkeypatch.setenv("SD_DATA_DIR", str(empty))
    monkeypatch.setenv("SD_HISTORY_URL", pg_url)
    at = app(GALLERY)
    assert not at.exception
    assert any("5 images" in c.value for c in at.caption)
    texts = [t.value for t in at.text]
    assert all(f"before-restart {i}" in texts for i in range(5))
    record = history.HistoryStore(url=pg_url).page().records[0]
    at.button(key=f"open_{record.id}").click().run()
    assert not at.exception and not at.warning  # the image itself came back too
    assert not (empty / history.DB_NAME).exists()  # nothing was kept on the container's disk


def test_a_delete_in_one_process_is_seen_by_another_on_its_next_run(app, pg_url, monkeypatch):
    """Another replica deletes a record: this one no longer shows it on its next run."""
    worker = _worker(pg_url, 2, "replica")
    worker.stdin.write("go\n")
    worker.communicate(timeout=120)
    monkeypatch.setenv("SD_HISTORY_URL", pg_url)
    at = app(GALLERY)
    assert any("2 images" in c.value for c in at.caption)
    other = history.HistoryStore(url=pg_url)  # the other process's own store and engine
    assert other.delete(other.page().records[0].id)
    at.run()
    assert any("1 image" in c.value for c in at.caption)


def test_four_processes_opening_a_new_database_at_once_migrate_it_once(shared_url):
    """Start-up on an empty database from several processes at once: one schema, no error."""
    code = (
        "import sys; from core import history; "
        "history.HistoryStore(url=sys.argv[1]); print('opened')"
    )
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", code, shared_url],
            cwd=APP_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [s.communicate(timeout=120)[0] for s in starters]
    assert [s.returncode for s in starters] == [0, 0, 0, 0]
    assert all(o.strip() == "opened" for o in outputs)
    store = history.HistoryStore(url=shared_url)
    with store.engine.connect() as conn:
        assert schema.current_version(conn) == schema.HEAD
