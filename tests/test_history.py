"""The seed history store on both engines: real SQLite + PNG files in tmp_path, and a real
PostgreSQL server (testkit/pg.py). Tests taking `engine` run on each; the others are about the
local file layout."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import threading
import time

import pytest
from PIL import Image

from core import history, metadata
from core.generation import GenerationRequest
from core.history import HistoryError, HistoryStore, schema

from .conftest import SMALL, current_store, replace_blob

FACTS = {
    "model": "demo",
    "model_revision": "demo",
    "scheduler": "FlowMatchEulerDiscreteScheduler",
    "device": "cpu",
    "dtype": "float32",
    "torch_version": "2.13.0",
    "diffusers_version": "0.42.1",
    "transformers_version": "5.24.0",
    "backend": "local",
}


def _record(prompt="a red fox", seed=7, session="s1", created_at=None, **request):
    req = GenerationRequest(prompt=prompt, seed=seed, **{**SMALL, **request})
    return history.new_record(
        req,
        seed=seed,
        facts=FACTS,
        session_id=session,
        duration_seconds=0.5,
        created_at=created_at,
    )


def _image(value=0):
    return Image.new("RGB", (64, 64), (value % 256, 10, 20))


def test_save_stores_png_thumbnail_and_row(engine):
    """A save keeps a PNG with both chunks, a WebP thumbnail and the row."""
    store = current_store()
    saved = store.save(_image(), _record(prompt="../../etc/passwd"))
    chunks = metadata.read_png_text(store.png_bytes(saved.id))
    assert set(chunks) >= {metadata.PARAMETERS_KEY, metadata.RECORD_KEY}
    assert store.thumbnail(saved.id)[:4] == b"RIFF"
    assert store.get(saved.id) == saved
    assert saved.image_sha256 == history.pixel_sha256(_image())


def test_local_files_are_named_by_id(tmp_path):
    """Locally the PNG and thumbnail are files named by the record id, never the prompt."""
    store = HistoryStore(tmp_path)
    saved = store.save(_image(), _record(prompt="../../etc/passwd"))
    png = store.image_path(saved.id)
    assert png.parent.parent == store.images_dir and png.name == f"{saved.id}.png"
    assert png.read_bytes() == store.png_bytes(saved.id)
    assert store.thumb_path(saved.id).read_bytes()[:4] == b"RIFF"


def test_record_png_parse_round_trip(engine):
    """Record → PNG → parse of the `parameters` chunk gives the record's form settings."""
    store = current_store()
    record = _record(
        prompt='odd, "prompt": here\nline 2',
        negative_prompt="blur, noise",
        guidance_scale=6.5,
        width=768,
        height=512,
    )
    saved = store.save(_image(), record)
    parsed = metadata.parameters_from_png(store.png_bytes(saved.id))
    expected = {k: v for k, v in saved.form_values().items() if k != "num_images"}
    assert parsed.values == expected
    assert parsed.extras["Model"] == "demo"
    full = metadata.read_png_text(store.png_bytes(saved.id))[metadata.RECORD_KEY]
    assert history.HistoryRecord.from_mapping(json.loads(full)) == saved


def test_restart_keeps_everything(engine):
    """A new store object on the same dir or URL sees every record and image."""
    first = current_store()
    ids = {first.save(_image(i), _record(seed=i)).id for i in range(3)}
    second = current_store()
    assert {r.id for r in second.page().records} == ids
    assert all(second.png_bytes(i) for i in ids)


def test_eight_threads_saving_at_once_lose_nothing(engine):
    """Eight threads saving concurrently, each with its own store, leave 8 rows and 8 PNGs."""
    store = current_store()
    barrier = threading.Barrier(8)
    errors = []

    def work(i):
        try:
            barrier.wait()
            current_store(repair=False).save(_image(i), _record(seed=i))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count() == 8
    assert all(store.png_bytes(r.id) for r in store.page().records)
    if store.local:
        assert len(list(store.images_dir.glob("*/*.png"))) == 8
    assert sorted(r.seed for r in store.page().records) == list(range(8))


def _age(path, seconds=3600):
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_orphan_png_with_record_gets_its_row_back(tmp_path):
    """A PNG whose row never committed is restored from its JSON chunk at start-up."""
    store = HistoryStore(tmp_path)
    saved = store.save(_image(), _record())
    with store.engine.begin() as conn:  # simulate a crash between rename and commit
        conn.execute(schema.records.delete())
    _age(store.image_path(saved.id))
    restarted = HistoryStore(tmp_path)
    assert restarted.repair_report["rows_restored"] == 1
    assert restarted.get(saved.id) == saved


def test_orphan_files_without_record_and_old_temps_are_removed(tmp_path):
    """A stray PNG without a record chunk and an old temp file are removed at start-up."""
    store = HistoryStore(tmp_path)
    stray = store.images_dir / "ab" / "abcdef.png"
    stray.parent.mkdir()
    _image().save(stray)
    temp = store.images_dir / "ab" / "x.png.123.tmp"
    temp.write_bytes(b"half")
    fresh = store.images_dir / "ab" / "y.png.456.tmp"
    fresh.write_bytes(b"in progress")
    _age(stray)
    _age(temp)
    report = HistoryStore(tmp_path).repair_report
    assert report["files_removed"] == 1 and report["temp_removed"] == 1
    assert not stray.exists() and not temp.exists()
    assert fresh.exists()  # young: may be another process's save in progress


def test_row_without_image_shows_a_placeholder(engine):
    """A row whose PNG is gone is kept; its thumbnail and image are placeholders."""
    store = current_store()
    saved = store.save(_image(), _record())
    replace_blob(store, saved.id, png=None, thumb=b"RIFF\0\0garbage")  # looks like WebP
    restarted = current_store()
    if restarted.local:
        assert restarted.repair_report["rows_without_image"] == 1
    assert restarted.get(saved.id) is not None
    placeholder = history.placeholder_image()
    assert restarted.thumbnail(saved.id)[:8] == metadata.PNG_SIGNATURE
    assert Image.open(io.BytesIO(restarted.thumbnail(saved.id))).size == (256, 256)
    assert restarted.stored_image(saved.id).shown[:8] == metadata.PNG_SIGNATURE
    assert restarted.png_bytes(saved.id) is None
    assert placeholder[:8] == metadata.PNG_SIGNATURE


def test_corrupt_image_shows_a_placeholder(engine):
    """A truncated PNG is replaced by a placeholder for display instead of raising."""
    store = current_store()
    saved = store.save(_image(), _record())
    replace_blob(store, saved.id, png=store.png_bytes(saved.id)[:40])
    shown = store.stored_image(saved.id).shown
    assert shown != store.png_bytes(saved.id)
    assert "damaged" in store.stored_image(saved.id).problem
    Image.open(io.BytesIO(shown)).verify()


def test_missing_thumbnail_is_redrawn(tmp_path):
    """A lost thumbnail is drawn again from its PNG at start-up."""
    store = HistoryStore(tmp_path)
    saved = store.save(_image(), _record())
    store.thumb_path(saved.id).unlink()
    assert HistoryStore(tmp_path).repair_report["thumbs_rebuilt"] == 1
    assert store.thumb_path(saved.id).exists()


def test_delete_hides_the_record_and_purge_removes_row_and_image(engine):
    """Delete hides the record (bytes kept for a restore); the purge 7 days later removes the
    row, the PNG and the thumbnail, and leaves the others."""
    store = current_store()
    keep = store.save(_image(1), _record(seed=1))
    gone = store.save(_image(2), _record(seed=2))
    assert store.delete(gone.id)
    assert store.get(gone.id) is None and store.count() == 1
    assert store.get(gone.id, include_deleted=True) is not None
    assert store.png_bytes(gone.id) is not None  # kept until the purge
    assert not store.delete(gone.id)
    assert store.purge() == 0  # not 7 days yet
    assert store.purge(now=time.time() + 7 * 86_400 + 60) == 1
    assert store.get(gone.id, include_deleted=True) is None and store.png_bytes(gone.id) is None
    if store.local:
        assert not store.image_path(gone.id).exists() and not store.thumb_path(gone.id).exists()
    assert store.get(keep.id) is not None and store.png_bytes(keep.id) is not None


def test_pagination_newest_first_and_filters(engine):
    """Pages hold 24 newest first; prompt search, seed and session filters narrow them."""
    store = current_store()
    for i in range(30):
        prompt = "a 100% red_fox" if i % 10 == 0 else f"cat number {i}"
        store.save(
            _image(i),
            _record(prompt=prompt, seed=i % 5, session=f"s{i % 2}", created_at=1000.0 + i),
        )
    first = store.page(1)
    assert first.total == 30 and first.pages == 2 and len(first.records) == 24
    assert [r.created_at for r in first.records] == [1000.0 + i for i in range(29, 5, -1)]
    assert len(store.page(2).records) == 6
    assert store.page(99).page == 2  # clamped to the last page
    assert store.page(text="RED_FOX").total == 3  # case-insensitive, `_` and `%` literal
    assert store.page(text="100%").total == 3
    assert store.page(text="_").total == 3
    assert store.page(seed=3).total == 6
    assert store.page(session_id="s1", seed=3).total == 3


def test_unwritable_data_dir_gives_history_error(tmp_path):
    """A data dir that cannot be created gives a HistoryError naming the folder and the fix."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(HistoryError, match="SD_DATA_DIR") as info:
        HistoryStore(blocker / "data")
    assert str(blocker) in str(info.value)


def test_read_only_folder_gives_history_error_on_save(tmp_path):
    """A save into a folder that turned read-only raises HistoryError, not OSError."""
    store = HistoryStore(tmp_path)
    # Root ignores permission bits, so make the images folder unusable another way.
    for child in store.images_dir.iterdir():
        child.rmdir()
    store.images_dir.rmdir()
    store.images_dir.write_text("in the way")
    with pytest.raises(HistoryError, match="writable"):
        store.save(_image(), _record())
    assert store.count() == 0


def test_environment_differences_named():
    """A record made elsewhere lists the device, dtype and version that differ."""
    record = _record()
    now = {**FACTS, "device": "cuda", "dtype": "bfloat16", "torch_version": "2.14.0"}
    diffs = history.environment_differences(record, now)
    assert any("device: recorded cpu, now cuda" in d for d in diffs)
    assert any("torch" in d for d in diffs) and len(diffs) == 3
    assert history.environment_differences(record, FACTS) == []


def test_a_model_folder_recorded_by_its_path_is_the_same_model_by_name():
    """A record saved before folders were recorded by name kept the server's path: verify
    compares it by the folder name (no "model" difference, and the path is not repeated);
    another folder is still a difference."""
    old = dataclasses.replace(_record(), model="/srv/models/sd35-medium")
    assert history.environment_differences(old, {**FACTS, "model": "sd35-medium"}) == []
    (diff,) = history.environment_differences(old, {**FACTS, "model": "sd35-large"})
    assert diff == "model: recorded sd35-medium, now sd35-large"


def test_model_revision_fingerprints_a_local_folder(demo_dir):
    """A local model folder is named by a fingerprint of its configs; the demo by "demo"."""
    first = history.model_revision(str(demo_dir))
    assert first.startswith("local:") and first == history.model_revision(str(demo_dir))
    assert history.model_revision("demo") == "demo"


def test_reproduce_and_verify_is_identical_for_the_tiny_pipeline(engine, demo_pipe):
    """Regenerating a stored record with the same seed gives identical pixels."""
    from core.local import run_pipeline

    class TinyBackend:  # the real pipeline behind the Backend protocol, no model loading
        name = "local"

        def generate(self, request, **_):
            images, seconds = run_pipeline(demo_pipe, request)
            return type("R", (), {"images": images})()

    store = current_store()
    request = GenerationRequest(prompt="a red fox", seed=11, **SMALL)
    images, _ = run_pipeline(demo_pipe, request)
    saved = store.save(
        images[0],
        history.new_record(request, seed=11, facts=FACTS, session_id="s", duration_seconds=0.1),
    )
    outcome = history.verify(store, saved, TinyBackend())
    assert outcome.identical and outcome.message.startswith("identical")
    other = store.save(
        images[0],
        history.new_record(
            GenerationRequest(prompt="a red fox", seed=12, **SMALL),
            seed=12,
            facts=FACTS,
            session_id="s",
            duration_seconds=0.1,
        ),
    )
    changed = history.verify(store, other, TinyBackend())
    assert not changed.identical and changed.differing_pixels > 0
    assert "pixels" in changed.message


def test_full_disk_message_says_to_free_space(tmp_path):
    """An out-of-space error becomes a HistoryError asking to free disk space."""
    import errno

    error = history._explain(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert "No space left on device" in str(error) and "Free some disk space" in str(error)
    assert "still shown" in str(error)


def test_schema_head_matches_migrations():
    """schema.HEAD names the newest migration file (update both when adding one)."""
    assert schema.newest_revision() == schema.HEAD


def test_history_from_before_versioning_is_upgraded_in_place(tmp_path):
    """A history.sqlite3 made by the pre-SQLAlchemy app opens with every row and file."""
    import sqlite3

    # The old app's columns: every field but `owner` (added by migration 0002),
    # `family`, `mode`, `mode_options` (0003), the source and mask names (0005) and the
    # LoRAs, styles and grid (0006).
    later = (
        *("owner", "family", "mode", "mode_options", *history.records.INPUT_FIELDS),
        *("loras", "styles", "grid_id", "grid_cell"),
    )
    fields = [f for f in history.record.FIELDS if f not in later]
    columns = ", ".join(f + (" TEXT PRIMARY KEY" if f == "id" else "") for f in fields)
    with sqlite3.connect(tmp_path / history.DB_NAME) as conn:  # the old app's exact DDL
        conn.executescript(
            f"CREATE TABLE records ({columns});"
            "CREATE INDEX records_created_at ON records (created_at);"
        )
    # What 0003 makes of a row of the demo model: its family, text to image, no options.
    old = dataclasses.replace(_record(seed=5, family="demo"), mode_options="{}")
    png = history.encode_png(_image(5), old)
    path = tmp_path / "images" / old.id[:2] / f"{old.id}.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(png)
    with sqlite3.connect(tmp_path / history.DB_NAME) as conn:
        conn.execute(
            f"INSERT INTO records VALUES ({', '.join('?' * len(fields))})",
            [getattr(old, f) for f in fields],
        )
    store = HistoryStore(tmp_path)
    assert store.get(old.id) == old and store.png_bytes(old.id) == png
    assert store.repair_report["thumbs_rebuilt"] == 1
    with store.engine.connect() as conn:
        assert schema.current_version(conn) == schema.HEAD
    store.save(_image(6), _record(seed=6))
    assert store.count() == 2


def test_history_url_setting_hides_its_password_and_refuses_other_databases(monkeypatch):
    """SD_HISTORY_URL: postgres:// uses psycopg 3, the password stays out of repr and errors."""
    from core.settings import SettingsError, load_settings

    url = "postgres://app:s3cret-pw@db.example:5432/hist"
    settings = load_settings(environ={"SD_HISTORY_URL": url}, secrets={})
    assert settings.history_url.startswith("postgresql+psycopg://app:s3cret-pw@")
    assert "s3cret-pw" not in repr(settings)
    assert history.describe_url(history.parse_url(url)).count("***") == 1
    with pytest.raises(SettingsError, match="PostgreSQL") as info:
        load_settings(environ={"SD_HISTORY_URL": "mysql://u:topsecret@h/db"}, secrets={})
    assert "topsecret" not in str(info.value)
    with pytest.raises(SettingsError, match="not a database URL") as info:
        load_settings(environ={"SD_HISTORY_URL": "just words with pw9"}, secrets={})
    assert "pw9" not in str(info.value)


# The next migration after HEAD (0002 added owner, soft delete and audit): what a later
# schema change looks like, upgrading a history that holds records.
NEXT = f"{int(schema.HEAD) + 1:04d}"
MIGRATION_NEXT = f'''"""Example migration {NEXT}: a note column (a later schema change)."""

import sqlalchemy as sa
from alembic import op

revision = "{NEXT}"
down_revision = "{schema.HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("example_note", sa.Text, nullable=True))
'''


def test_a_next_migration_upgrades_an_existing_history_in_place(engine, tmp_path):
    """Adding migrations/versions/<next>_*.py upgrades a HEAD history, keeping every record."""
    import shutil

    from sqlalchemy import inspect, text

    store = current_store()
    saved = store.save(_image(), _record())
    migrations = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, migrations)
    (migrations / "versions" / f"{NEXT}_note.py").write_text(MIGRATION_NEXT)
    schema.ensure_schema(store.engine, migrations=migrations, head=NEXT)
    schema.ensure_schema(store.engine, migrations=migrations, head=NEXT)  # a no-op now
    with store.engine.connect() as conn:
        assert schema.current_version(conn) == NEXT
        assert "example_note" in {c["name"] for c in inspect(conn).get_columns("records")}
        assert conn.execute(text("SELECT prompt FROM records")).scalar() == saved.prompt
    assert store.get(saved.id) == saved and store.png_bytes(saved.id)


def test_a_row_read_back_is_checked_column_by_column():
    """stored_problems() names each column holding what this app never writes; a sound
    record has none, and times that are not times read as 0.0 ("unknown")."""
    import dataclasses

    sound = dataclasses.asdict(_record())
    assert history.HistoryRecord.from_mapping(sound).stored_problems() == []
    hostile = {
        **sound,
        "id": "../../etc/x",
        "created_at": 1e15,
        "duration_seconds": float("nan"),
        "image_sha256": "<b>not hex</b>",
        "owner": None,
        "width": 2000,
    }
    record = history.HistoryRecord.from_mapping(hostile)
    problems = " | ".join(record.stored_problems())
    for column in ("id", "created_at", "duration_seconds", "image_sha256", "owner", "Width"):
        assert column in problems, column
    assert record.created_at == 0.0 and history.format_time(1e15).startswith("unknown")
    for value in (None, "yesterday", float("nan"), float("inf"), -1.0, b"\x00"):
        assert history.HistoryRecord.from_mapping({**sound, "created_at": value}).created_at == 0
    assert history.format_time(1_700_000_000) == "2023-11-14 22:13:20 UTC"
