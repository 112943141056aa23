"""Hostile storage: the history's disk or database is read-only, full, damaged or edited.

Each case drives the real pages under AppTest with the tiny pipeline and asserts what the
visitor reads, that the app goes on, and that nothing stored is lost. Real faults where
the machine allows them: a tiny tmpfs for a full disk, a read-only remount for a read-only
disk (both need root with mount rights, as in CI), a real PostgreSQL server stopped or
given a wrong password.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import update

from core import history, metadata
from core.generation import GenerationRequest
from core.history import schema

from .conftest import SMALL, current_store, fill_small, replace_blob

GALLERY = "pages/gallery.py"
FACTS = {"model": "demo", "model_revision": "demo", "device": "cpu", "dtype": "float32"}


# --- helpers ---------------------------------------------------------------------------------
def _add(store, *, seed=5, prompt="a quiet lake"):
    request = GenerationRequest(prompt=prompt, seed=seed, **SMALL)
    record = history.new_record(
        request, seed=seed, facts=FACTS, session_id="elsewhere", duration_seconds=0.1
    )
    return store.save(Image.new("RGB", (64, 64), (seed % 256, 40, 0)), record)


def _messages(at) -> list[str]:
    """Everything the visitor can read as text on the page."""
    parts = [*at.error, *at.warning, *at.info, *at.success, *at.code, *at.text, *at.caption]
    return [str(p.value) for p in parts] + [m.value for m in at.markdown]


def _bomb_png(side: int = 24_000) -> bytes:
    """A 24000×24000 one-bit PNG (~70 KB): 576 megapixels once decoded."""
    row = b"\0" * (1 + side // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        metadata.PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


class Disk:
    """A small disk of its own: a real tmpfs where mounting is allowed (root, as in CI).

    Where it is not, the one boundary the history writes through is patched with a small
    honest fake instead: image writes beyond the space left raise ENOSPC, and the
    writability probe raises EROFS once the disk is made read-only.
    """

    def __init__(self, size: str, monkeypatch) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sd35-tmpfs-"))
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.folder)],
            capture_output=True,
            text=True,
        )
        self.real = done.returncode == 0
        self.monkeypatch = monkeypatch
        self.left: int | None = None  # fake: bytes the images may still take

    def fill_leaving(self, room: int) -> None:
        """Take all free space but `room` bytes."""
        if self.real:
            stat = os.statvfs(self.folder)
            (self.folder / "filler").write_bytes(
                b"\0" * max(0, stat.f_bavail * stat.f_frsize - room)
            )
            return
        from core.history import blobs

        self.left = room
        write = blobs._write_atomic

        def write_within_space(path, data):
            if len(data) > self.left:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            self.left -= len(data)
            write(path, data)

        self.monkeypatch.setattr(blobs, "_write_atomic", write_within_space)

    def make_read_only(self) -> None:
        if self.real:
            subprocess.run(["mount", "-o", "remount,ro", str(self.folder)], check=True)
            return
        from core.history import engine

        def read_only(folder):
            raise OSError(errno.EROFS, "Read-only file system", str(folder))

        self.monkeypatch.setattr(engine, "_probe_writable", read_only)

    def remove(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.folder)], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(name="tmpfs")
def fixture_tmpfs(monkeypatch):
    """Make small disks of their own (`Disk`); close every store on them, then unmount."""
    disks: list[Disk] = []

    def make(size: str) -> Disk:
        disks.append(Disk(size, monkeypatch))
        return disks[-1]

    yield make
    for key, store in list(history._STORES.items()):
        store.engine.dispose()
        del history._STORES[key]
    for disk in disks:
        disk.remove()


def _files(store) -> set[str]:
    return {p.name for p in store.images_dir.glob("*/*")} | {
        p.name for p in store.thumbs_dir.glob("*/*")
    }


# --- read-only history (issue 10, item 4) -----------------------------------------------------
def test_read_only_disk_is_browsed_with_every_record_and_a_reason(app, tmpfs, monkeypatch):
    """A history on a read-only disk shows every record and says why nothing can be saved."""
    disk = tmpfs("64m")
    data = disk.folder / "data"
    store = history.HistoryStore(data)
    saved = [_add(store, seed=i, prompt=f"picture {i}") for i in range(3)]
    store.engine.dispose()
    disk.make_read_only()
    monkeypatch.setenv("SD_DATA_DIR", str(data))
    at = app(GALLERY)
    assert not at.exception
    assert any("3 images" in c.value for c in at.caption)
    assert all(f"picture {i}" in [t.value for t in at.text] for i in range(3))
    assert any("read-only" in w.value and "cannot be saved" in w.value for w in at.warning)
    assert any("Read-only file system" in c.value for c in at.code)
    at.button(key=f"open_{saved[0].id}").click().run()
    assert not at.exception and at.button(key="delete").disabled
    assert at.get("download_button")[0].proto.disabled is False  # the original downloads


def test_read_only_disk_generator_keeps_the_image_and_says_why(app, tmpfs, monkeypatch):
    """Generating onto a read-only history shows and downloads the image; nothing is lost."""
    disk = tmpfs("64m")
    data = disk.folder / "data"
    store = history.HistoryStore(data)
    _add(store)
    store.engine.dispose()
    disk.make_read_only()
    monkeypatch.setenv("SD_DATA_DIR", str(data))
    at = app()
    fill_small(at)
    at.button(key="generate").click().run()
    assert not at.exception
    warning = next(w.value for w in at.warning if "not saved" in w.value.lower())
    assert "read-only" in warning and "Read-only file system" in warning
    png = at.session_state["last_result"].pngs[0]
    assert metadata.PARAMETERS_KEY in metadata.read_png_text(png)  # the download has settings
    assert history.HistoryStore(data).count() == 1  # the old record is still there


# --- full disk part-way through a batch (issue 10, item 10) -----------------------------------
def test_full_disk_mid_batch_names_the_kept_images_and_leaves_no_orphans(app, tmpfs, monkeypatch):
    """4 images on a nearly full disk: the message names the saved ones, files match rows."""
    disk = tmpfs("8m")
    data = disk.folder / "data"
    monkeypatch.setenv("SD_DATA_DIR", str(data))
    at = app()
    fill_small(at, seed=40)
    at.slider(key="num_images").set_value(4)
    # Learn the size of one image pair, then fill the disk to leave room for about two.
    at.button(key="generate").click().run()
    store = history.open_store(data)
    assert store.count() == 4
    pair = max(
        store.image_path(r.id).stat().st_size + store.thumb_path(r.id).stat().st_size
        for r in store.page().records
    )
    for record in store.page().records:
        store.delete(record.id)
    store.purge(now=time.time() + 8 * 86_400)  # a delete keeps the files 7 days: free them now
    disk.fill_leaving(int(2.5 * pair) + 96 * 1024)
    at.button(key="generate").click().run()
    assert not at.exception
    message = next(w.value for w in at.warning if "not saved" in w.value)
    kept = store.page().records
    assert 1 <= len(kept) < 4, message
    seeds = sorted(r.seed for r in kept)
    assert f"(seed {', '.join(map(str, seeds))}) saved" in message
    assert "No space left on device" in message or "disk is full" in message
    assert "Free some disk space" in message
    # No orphan: exactly the kept records have files, and no temporary file is left.
    assert _files(store) == {f"{r.id}.png" for r in kept} | {f"{r.id}.webp" for r in kept}
    pngs = at.session_state["last_result"].pngs
    assert len(pngs) == 4
    assert all(metadata.PARAMETERS_KEY in metadata.read_png_text(p) for p in pngs)


# --- damaged database ------------------------------------------------------------------------
def test_corrupt_database_file_is_explained_and_left_untouched(app, monkeypatch, tmp_path):
    """A history.sqlite3 that is not a database: a clear message, never overwritten."""
    data = tmp_path / "data"
    data.mkdir()
    garbage = b"this is not an SQLite file, it was damaged" * 100
    (data / history.DB_NAME).write_bytes(garbage)
    monkeypatch.setenv("SD_DATA_DIR", str(data))
    at = app(GALLERY)
    assert not at.exception
    assert any("damaged" in e.value and "move" in e.value for e in at.error)
    at.switch_page("pages/generate.py").run()
    fill_small(at)
    at.button(key="generate").click().run()
    assert not at.exception
    assert any("Not saved to the history" in w.value for w in at.warning)
    assert at.session_state["last_result"].pngs[0].startswith(metadata.PNG_SIGNATURE)
    assert (data / history.DB_NAME).read_bytes() == garbage  # nothing lost


def _zero_version_row(path: Path) -> None:
    """Zero the cell holding the schema version (the last bytes of its page): the damage
    that made a history read as 'read-only … (table images already exists)'."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'alembic_version'"
        ).fetchone()[0]
    data = bytearray(path.read_bytes())
    data[root * page_size - 64 : root * page_size] = bytes(64)
    path.write_bytes(bytes(data))


def test_damaged_database_is_reported_as_damaged_not_read_only(app, monkeypatch, tmp_path):
    """A history.sqlite3 damaged inside (its version row zeroed): the gallery and the
    generator say damaged and what to do, not read-only; the file is left as it was."""
    data = tmp_path / "data"
    store = history.HistoryStore(data)
    _add(store, seed=1)
    store.engine.dispose()
    _zero_version_row(data / history.DB_NAME)
    damaged = (data / history.DB_NAME).read_bytes()
    monkeypatch.setenv("SD_DATA_DIR", str(data))
    at = app(GALLERY)
    assert not at.exception
    assert not any("read-only" in m for m in _messages(at))
    assert any("damaged" in e.value and "move history.sqlite3 aside" in e.value for e in at.error)
    at.switch_page("pages/generate.py").run()
    fill_small(at)
    at.button(key="generate").click().run()
    assert not at.exception
    warning = next(w.value for w in at.warning if "Not saved to the history" in w.value)
    assert "damaged" in warning and "read-only" not in warning
    assert (data / history.DB_NAME).read_bytes() == damaged  # nothing written


def test_a_history_a_newer_app_upgraded_is_browsed_read_only_saying_why(engine):
    """A schema version no migration here knows (a newer replica upgraded the database):
    every record is readable, saving is refused, and the reason says to update the app."""
    store = current_store()
    saved = _add(store)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    store.engine.dispose()
    reopened = current_store()
    assert "'0099'" in reopened.read_only and "update the app" in reopened.read_only
    assert reopened.get(saved.id) == saved
    with pytest.raises(history.HistoryError, match="read-only"):
        _add(reopened, seed=6)


def test_a_row_whose_text_is_not_utf8_is_listed(app):
    """A prompt stored as bytes that are not UTF-8 (another program, a damaged page): the
    gallery lists every record, the bad bytes shown as U+FFFD, instead of failing."""
    store = current_store()
    _add(store, seed=1, prompt="a sound one")
    odd = _add(store, seed=2)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE records SET prompt = CAST(X'6F6464FF20E9' AS TEXT) WHERE id = ?", (odd.id,)
        )
    at = app(GALLERY)
    assert not at.exception and not at.error
    texts = [t.value for t in at.text]
    assert "a sound one" in texts and "odd\ufffd \ufffd" in texts


# --- stored images that are gone, garbage or bombs (issue 10, item 3) -------------------------
def test_missing_image_is_explained_in_details(app, engine):
    """A record whose image is gone: placeholder, a message, download disabled, page goes on."""
    store = current_store()
    saved = _add(store)
    replace_blob(store, saved.id, png=None)
    at = app(GALLERY)
    at.button(key=f"open_{saved.id}").click().run()
    assert not at.exception
    assert any("missing" in w.value for w in at.warning)
    assert at.get("download_button")[0].proto.disabled
    assert store.get(saved.id) == saved  # the row and its settings are kept


def test_garbage_image_file_is_explained(app, engine):
    """Bytes that are no image: a placeholder in the grid, 'damaged' in the details."""
    store = current_store()
    saved = _add(store)
    replace_blob(store, saved.id, png=b"\x89PNG\r\n\x1a\nnot really", thumb=b"<html>x</html>")
    at = app(GALLERY)
    assert not at.exception and "Seed 5 · 512×512" in [t.value for t in at.text]
    at.button(key=f"open_{saved.id}").click().run()
    assert not at.exception
    assert any("damaged" in w.value for w in at.warning)


def test_decompression_bomb_image_shows_a_placeholder_and_a_message(app, engine):
    """A stored PNG replaced by a 24000² bomb is never decoded: placeholder and message."""
    store = current_store()
    saved = _add(store)
    bomb = _bomb_png()
    replace_blob(store, saved.id, png=bomb, thumb=bomb)
    at = app(GALLERY)
    assert not at.exception
    at.button(key=f"open_{saved.id}").click().run()
    assert not at.exception
    assert any("decompression bomb" in w.value for w in at.warning)
    shown = Image.open(io.BytesIO(store.stored_image(saved.id).shown))
    assert shown.size == (512, 512)  # the placeholder, not 24000²
    assert store.png_bytes(saved.id) == bomb  # still there to download and inspect


def test_verify_against_a_bomb_says_so_instead_of_decoding_it(app, engine):
    """Regenerate & verify on a record whose stored image is a bomb reports, not crashes."""
    store = current_store()
    at = app()
    fill_small(at, seed=3)
    at.button(key="generate").click().run()
    record = store.page().records[0]
    replace_blob(store, record.id, png=_bomb_png())
    at.switch_page(GALLERY).run()
    at.button(key=f"open_{record.id}").click().run()
    at.button(key="verify").click().run()
    assert not at.exception
    assert any("too large to decode" in w.value for w in at.warning)


# --- rows out of range (issue 10, item 12) ----------------------------------------------------
def _edit_row(store, record_id, **values):
    with store.engine.begin() as conn:
        conn.execute(
            update(schema.records).where(schema.records.c.id == record_id).values(**values)
        )


def test_use_settings_of_a_row_with_width_2000_is_refused_with_the_range(app, engine):
    """Use these settings on an edited row (width 2000) names the range; the form is kept."""
    store = current_store()
    saved = _add(store, prompt="edited elsewhere")
    _edit_row(store, saved.id, width=2000)
    at = app(GALLERY)
    assert "Seed 5 · 2000×512" in [t.value for t in at.text]
    at.button(key=f"open_{saved.id}").click().run()
    at.button(key="use_settings").click().run()
    assert not at.exception
    assert any("cannot use" in e.value for e in at.error)
    assert any("Width" in c.value and "512–1440" in c.value for c in at.code)
    assert at.title[0].value == "Seed history"  # stayed on the gallery
    assert store.get(saved.id).width == 2000  # nothing changed or lost


def test_verify_of_a_row_with_steps_500_is_refused_with_the_range(app, engine):
    """Regenerate & verify on a row with steps 500 names the range and runs nothing."""
    store = current_store()
    saved = _add(store)
    _edit_row(store, saved.id, steps=500)
    at = app(GALLERY)
    at.button(key=f"open_{saved.id}").click().run()
    at.button(key="verify").click().run()
    assert not at.exception
    assert any("Steps" in c.value and "1–100" in c.value for c in at.code)
    assert not any("Regenerated" in s.value for s in [*at.success, *at.warning])


def test_row_with_a_size_that_is_no_multiple_of_16_is_refused(app, engine):
    """A row with width 1000 (in range, not a multiple of 16) is refused like user input."""
    store = current_store()
    saved = _add(store)
    _edit_row(store, saved.id, width=1000)
    at = app(GALLERY)
    at.button(key=f"open_{saved.id}").click().run()
    at.button(key="verify").click().run()
    assert not at.exception
    assert any("cannot use" in e.value for e in at.error)
    assert any("16" in c.value for c in at.code)


def test_row_with_null_and_text_values_is_listed_and_refused(app):
    """An edited SQLite row (NULL prompt, text in number columns) lists, shows, and is refused."""
    store = current_store()
    saved = _add(store)
    markup = "![](http://attacker.example/px.png)"
    with store.engine.begin() as conn:  # as another program would: no SQLAlchemy types
        conn.exec_driver_sql(
            "UPDATE records SET prompt = NULL, seed = 'abc', width = ?, created_at = 'yesterday'"
            " WHERE id = ?",
            (markup, saved.id),
        )
    at = app(GALLERY)
    assert not at.exception
    assert f"Seed abc · {markup}×512" in [t.value for t in at.text]  # drawn as plain text
    at.button(key=f"open_{saved.id}").click().run()
    at.button(key="use_settings").click().run()
    assert not at.exception
    assert any("cannot use" in e.value for e in at.error)
    assert any("Seed" in c.value and "Width" in c.value for c in at.code)
    assert not any(markup in m.value for m in at.markdown)
    assert store.png_bytes(saved.id)  # the image is still there


# --- rows whose times or names are impossible (issue 21) -----------------------------------------
def _edit_raw(store, record_id, column, value):
    """Set one column as another program would (no SQLAlchemy types, any value)."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE records SET {column} = {'?' if store.local else '%s'} WHERE id = "
            f"{'?' if store.local else '%s'}",
            (value, record_id),
        )


def test_rows_with_impossible_times_open_in_details_and_export(app, engine):
    """created_at 1e15, -1e15, infinity (and NaN on PostgreSQL): Details opens for each, and
    the whole-history zip holds every record, the bad ones marked, saying so."""
    import json
    import zipfile

    from core.history import export

    store = current_store()
    good = _add(store, seed=1, prompt="a sound row")
    bad_times = [1e15, -1e15, float("inf")] + ([] if store.local else [float("nan")])
    bad = [_add(store, seed=10 + i, prompt=f"odd time {i}") for i in range(len(bad_times))]
    for record, value in zip(bad, bad_times, strict=True):
        _edit_raw(store, record.id, "created_at", value)
    at = app(GALLERY)
    assert not at.exception
    for record in bad:
        at.button(key=f"open_{record.id}").click().run()
        assert not at.exception, record.id
        details = next(c.value for c in at.code if c.value.lstrip().startswith("id"))
        assert "unknown (not a valid time)" in details
    with zipfile.ZipFile(io.BytesIO(export.zip_bytes(store))) as archive:
        lines = [json.loads(x) for x in archive.read("metadata.jsonl").splitlines()]
        readme = archive.read("README.txt").decode()
        assert {line["id"] for line in lines} == {good.id} | {r.id for r in bad}
        marked = {line["id"] for line in lines if line.get("problems")}
        assert marked == {r.id for r in bad}
        assert all("created_at" in " ".join(x["problems"]) for x in lines if x["id"] in marked)
        assert all(archive.read(line["file"]) for line in lines)  # every image is there
        assert f"{len(bad)} records hold values" in readme


def test_export_builds_file_names_only_from_checked_values(engine):
    """A row whose seed (SQLite) or id (PostgreSQL) is '../../evil' cannot name a file
    outside images/ in the zip (a zip slip when unpacked)."""
    import zipfile

    from core.history import export

    store = current_store()
    saved = _add(store, seed=3)
    if store.local:  # the files are named by id: edit the seed
        _edit_raw(store, saved.id, "seed", "../../../evil")
    else:  # the bytes are found by id: edit it in both tables
        with store.engine.begin() as conn:
            for table in ("records", "images"):
                conn.exec_driver_sql(
                    f"UPDATE {table} SET id = '../../../evil' WHERE id = %s", (saved.id,)
                )
    with zipfile.ZipFile(io.BytesIO(export.zip_bytes(store))) as archive:
        names = [n for n in archive.namelist() if n.startswith("images/")]
    assert len(names) == 1 and ".." not in names[0] and names[0].count("/") == 1


def test_every_record_is_read_once_past_a_row_whose_time_is_text(tmp_path):
    """Batched reads (export, copy) page past a row whose created_at is text: each record
    once, none twice, no endless loop."""
    import itertools

    store = history.HistoryStore(tmp_path)
    saved = [_add(store, seed=i) for i in range(4)]
    _edit_raw(store, saved[2].id, "created_at", "yesterday")
    read = [r.id for r in itertools.islice(store.iter_records(batch=2), 20)]
    assert sorted(read) == sorted(r.id for r in saved)


def test_admin_panel_draws_when_audit_and_delete_times_are_impossible(app, engine):
    """An audit line and a delete whose times are text (SQLite) or NaN (PostgreSQL): the
    admins' panel still lists them."""
    store = current_store()
    gone = _add(store, seed=4, prompt="deleted, oddly")
    store.delete(gone.id)
    odd = "soon" if store.local else float("nan")
    _edit_raw(store, gone.id, "deleted_at", odd)
    with store.engine.begin() as conn:
        conn.execute(update(schema.audit).values(at=0.0))
        conn.exec_driver_sql(f"UPDATE audit SET at = {'?' if store.local else '%s'}", (odd,))
    at = app(GALLERY)
    assert not at.exception
    assert any(e.label.startswith("Deleted images (1)") for e in at.expander)
    assert [e.record_id for e in store.audit_trail()] == [gone.id]


# --- the database server goes away (PostgreSQL) -----------------------------------------------
@pytest.fixture(name="own_pg")
def fixture_own_pg(pg_cluster):
    """A PostgreSQL server of this test's own, free to stop and start."""
    from testkit.pg import Cluster

    cluster = Cluster(pg_cluster.bindir)
    cluster.start()
    yield cluster
    for key, store in list(history._STORES.items()):
        if key[0] == "url":
            store.engine.dispose()
            del history._STORES[key]
    cluster.remove()


def test_database_stopped_mid_session_keeps_the_image_then_saves_again(app, own_pg, monkeypatch):
    """Server stopped: image shown and downloadable, 'not saved' and why; back: saves again."""
    from testkit.pg import PASSWORD

    monkeypatch.setenv("SD_HISTORY_URL", own_pg.url())
    at = app()
    fill_small(at, seed=1)
    at.button(key="generate").click().run()
    assert at.session_state["last_result"].history_error is None
    own_pg.stop()
    fill_small(at, seed=2)
    at.button(key="generate").click().run()
    assert not at.exception
    warning = next(w.value for w in at.warning if "Not saved to the history" in w.value)
    assert "running and reachable" in warning and "***" in warning
    assert not any(PASSWORD in text for text in _messages(at))
    assert at.get("download_button")
    own_pg.start()
    fill_small(at, seed=3)
    at.button(key="generate").click().run()
    assert at.session_state["last_result"].history_error is None
    seeds = sorted(r.seed for r in history.HistoryStore(url=own_pg.url()).page().records)
    assert seeds == [1, 3]  # no half record of seed 2


def test_wrong_database_password_is_named_without_showing_it(app, pg_url, monkeypatch, caplog):
    """A wrong password in SD_HISTORY_URL: the page says to check it, never shows or logs it."""
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-password-8d1f"
    monkeypatch.setenv("SD_HISTORY_URL", pg_url.replace(pg_url.split(":")[2].split("@")[0], wrong))
    at = app()
    fill_small(at)
    at.button(key="generate").click().run()
    assert not at.exception
    warning = next(w.value for w in at.warning if "Not saved" in w.value)
    assert "password" in warning and wrong not in warning
    assert at.get("download_button")
    at.switch_page(GALLERY).run()
    assert not at.exception
    assert any("password" in e.value for e in at.error)
    assert not any(wrong in text for text in _messages(at))
    assert "password" in caplog.text and wrong not in caplog.text


def test_database_server_disk_full_keeps_the_image_then_saves_again(
    app, pg_cluster, tmpfs, monkeypatch
):
    """The PostgreSQL server's disk fills up: 'not saved', free space; the next save works."""
    from testkit.pg import Cluster

    disk = tmpfs("96m")
    if not disk.real:
        pytest.skip(
            "needs a real small disk for the server (mount a tmpfs: root with mount rights)"
        )
    cluster = Cluster(pg_cluster.bindir, parent=disk.folder)
    try:
        cluster.start()
        monkeypatch.setenv("SD_HISTORY_URL", cluster.url())
        at = app()
        fill_small(at, seed=1)
        at.button(key="generate").click().run()
        assert at.session_state["last_result"].history_error is None
        disk.fill_leaving(64 * 1024)
        fill_small(at, seed=2)
        at.button(key="generate").click().run()
        assert not at.exception
        warning = next(w.value for w in at.warning if "Not saved to the history" in w.value)
        assert "No space left on device" in warning
        assert "Free some disk space on the database server" in warning
        assert at.get("download_button")
        (disk.folder / "filler").unlink()
        fill_small(at, seed=3)
        at.button(key="generate").click().run()
        assert at.session_state["last_result"].history_error is None
        store = history.HistoryStore(url=cluster.url())
        assert sorted(r.seed for r in store.page().records) == [1, 3]
        assert all(store.png_bytes(r.id) for r in store.page().records)
    finally:
        for key, store in list(history._STORES.items()):
            store.engine.dispose()
            del history._STORES[key]
        cluster.remove()


def test_database_stopped_shows_one_error_on_the_seed_history(app, own_pg, monkeypatch):
    """The server stops while a visitor browses: the Seed history says so once (one box, no
    crash), and shows the records again once the server is back."""
    from testkit.pg import PASSWORD

    monkeypatch.setenv("SD_HISTORY_URL", own_pg.url())
    at = app()
    fill_small(at, seed=1)
    at.button(key="generate").click().run()
    own_pg.stop()
    at.switch_page(GALLERY).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "Could not read the history" in errors[0], errors
    assert "***" in errors[0] and PASSWORD not in errors[0]
    assert any("audit trail cannot be read now" in c.value for c in at.caption)  # admin panel
    own_pg.start()
    at.run()
    assert not at.exception and not at.error
    assert any("1 image" in c.value for c in at.caption)
