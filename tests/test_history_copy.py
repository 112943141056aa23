"""Moving a history between stores (the copy command) and the whole-history zip."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

from PIL import Image

from core import history, metadata
from core.generation import GenerationRequest
from core.history import copy, export
from testkit.pg import PASSWORD

from .conftest import APP_ROOT, SMALL, current_store, replace_blob

FACTS = {"model": "demo", "model_revision": "demo", "device": "cpu", "dtype": "float32"}


def _fill(store, count):
    saved = []
    for i in range(count):
        request = GenerationRequest(prompt=f"copied {i}", seed=i, **SMALL)
        record = history.new_record(
            request, seed=i, facts=FACTS, session_id="s", duration_seconds=0.1, created_at=1e9 + i
        )
        saved.append(store.save(Image.new("RGB", (96, 96), (i * 20 % 256, 9, 9)), record))
    return saved


def _copy_cli(source: str, destination: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.history.copy", source, destination],
        cwd=APP_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_copy_folder_to_postgresql_and_back_is_exact_and_idempotent(tmp_path, pg_url):
    """Folder → PostgreSQL → new folder keeps every row and byte; a rerun copies nothing."""
    local = history.HistoryStore(tmp_path / "local")
    saved = _fill(local, 7)
    first = _copy_cli(str(tmp_path / "local"), pg_url)
    assert first.returncode == 0, first.stderr
    assert "Copied 7 records" in first.stdout and "0 already there" in first.stdout
    assert "record" in first.stderr  # the progress bar
    assert PASSWORD not in first.stdout + first.stderr and "***" in first.stdout
    again = _copy_cli(str(tmp_path / "local"), pg_url)
    assert "Copied 0 records" in again.stdout and "7 already there" in again.stdout
    back = _copy_cli(pg_url, str(tmp_path / "backup"))
    assert back.returncode == 0, back.stderr
    remote = history.HistoryStore(url=pg_url)
    restored = history.HistoryStore(tmp_path / "backup")
    for record in saved:
        assert remote.get(record.id) == record == restored.get(record.id)
        assert remote.png_bytes(record.id) == local.png_bytes(record.id)
        assert restored.png_bytes(record.id) == local.png_bytes(record.id)
        assert restored.thumbnail(record.id) == local.thumbnail(record.id)


def test_copy_keeps_a_record_whose_image_is_gone(tmp_path, pg_url):
    """A source row without its image is copied as a row (its settings still reproduce it)."""
    local = history.HistoryStore(tmp_path / "local")
    saved = _fill(local, 2)
    local.image_path(saved[0].id).unlink()
    report = copy.copy_history(local, history.HistoryStore(url=pg_url), progress=False)
    assert (report.copied, report.without_image) == (2, 1)
    assert history.HistoryStore(url=pg_url).get(saved[0].id) == saved[0]


def test_copy_refuses_a_record_whose_id_would_name_a_file_outside_the_folder(tmp_path, pg_url):
    """A PostgreSQL row edited to id '../../x' is not copied into a folder (no file outside
    it); the other records are, and the report counts the refused one."""
    remote = history.HistoryStore(url=pg_url)
    saved = _fill(remote, 2)
    with remote.engine.begin() as conn:
        for table in ("records", "images"):
            conn.exec_driver_sql(f"UPDATE {table} SET id = '../../x' WHERE id = %s", (saved[0].id,))
    report = copy.copy_history(
        remote, history.HistoryStore(tmp_path / "d" / "data"), progress=False
    )
    assert (report.copied, report.refused) == (1, 1)
    assert not (tmp_path / "x.png").exists() and not list(tmp_path.glob("d/*.png"))
    assert history.HistoryStore(tmp_path / "d" / "data").ids([saved[1].id]) == {saved[1].id}


def test_copy_to_a_wrong_password_fails_clearly_without_showing_it(tmp_path, pg_url):
    """A wrong destination password: exit 1, a message naming the fix, not the password."""
    history.HistoryStore(tmp_path / "local")
    wrong = pg_url.replace(PASSWORD, "wrong-pw-4711")
    done = _copy_cli(str(tmp_path / "local"), wrong)
    assert done.returncode == 1
    assert "password" in done.stderr and "wrong-pw-4711" not in done.stderr + done.stdout


def test_whole_history_zip_holds_every_png_and_its_metadata(engine):
    """The zip has each stored PNG (settings chunks intact) and one metadata line per record."""
    store = current_store()
    saved = _fill(store, 3)
    replace_blob(store, saved[1].id, png=None)
    with zipfile.ZipFile(io.BytesIO(export.zip_bytes(store))) as archive:
        lines = [json.loads(x) for x in archive.read("metadata.jsonl").splitlines()]
        assert [line["id"] for line in lines] == [r.id for r in saved]
        assert lines[1]["file"] is None
        for line, record in zip(lines, saved, strict=True):
            if line["file"]:
                png = archive.read(line["file"])
                assert png == store.png_bytes(record.id)
                assert metadata.parameters_from_png(png).values["seed"] == record.seed


def test_gallery_offers_the_whole_history_download(app, engine):
    """The Seed history page has a 'Download the whole history' button with the count."""
    _fill(current_store(), 2)
    at = app("pages/gallery.py")
    assert not at.exception
    (button,) = [b for b in at.get("download_button") if "whole history" in b.proto.label]
    assert "2 images" in button.proto.label and not button.proto.disabled
