"""Ownership, soft delete, restore, purge, the audit trail and the daily limit: in the store
on both engines (real SQLite and a real PostgreSQL), and on the pages under AppTest."""

from __future__ import annotations

import time

import pytest
from PIL import Image
from sqlalchemy import update

from core import history, limits
from core.auth import LOCAL_USER
from core.generation import GenerationRequest
from core.history import NotAllowed, schema

from .conftest import SMALL, UNDO_0006, current_store, fill_small
from .test_auth import AUTH, signed

GALLERY = "pages/gallery.py"
FACTS = {"model": "demo", "model_revision": "demo", "device": "cpu", "dtype": "float32"}
ALICE, BOB, ADMIN = "alice@example.com", "bob@example.com", "admin@example.com"
WEEK = 7 * 86_400


def _add(store, *, owner=LOCAL_USER, prompt="a quiet lake", seed=5, created_at=None):
    record = history.new_record(
        GenerationRequest(prompt=prompt, seed=seed, **SMALL),
        seed=seed,
        facts=FACTS,
        session_id="s",
        duration_seconds=0.1,
        created_at=created_at,
        owner=owner,
    )
    return store.save(Image.new("RGB", (64, 64), (seed % 256, 0, 0)), record)


def _age_delete(store, record_id: str, seconds: float) -> None:
    """Move a delete `seconds` into the past (what waiting that long would do)."""
    with store.engine.begin() as conn:
        conn.execute(
            update(schema.records)
            .where(schema.records.c.id == record_id)
            .values(deleted_at=time.time() - seconds)
        )


# --- the store -----------------------------------------------------------------------------
def test_records_keep_their_owner_and_mine_filters_by_it(engine):
    """Each record stores who made it; page(owner=…) is "Mine", page() is "Everyone"."""
    store = current_store()
    a = _add(store, owner=ALICE, seed=1)
    _add(store, owner=BOB, seed=2)
    _add(store, seed=3)  # made without sign-in
    assert store.get(a.id).owner == ALICE
    assert store.page().total == 3
    assert [r.seed for r in store.page(owner=ALICE).records] == [1]
    assert [r.owner for r in store.page(owner=LOCAL_USER).records] == [LOCAL_USER]


def test_store_refuses_a_delete_by_someone_else(engine):
    """Bob cannot delete Alice's image in the store itself; Alice and an admin can."""
    store = current_store()
    first, second = _add(store, owner=ALICE, seed=1), _add(store, owner=ALICE, seed=2)
    with pytest.raises(NotAllowed, match="Only the person who made this image"):
        store.delete(first.id, actor=BOB)
    assert store.get(first.id) is not None and store.audit_trail() == []
    assert store.delete(first.id, actor=ALICE)
    assert store.delete(second.id, actor=ADMIN, admin=True)
    assert store.page().total == 0
    trail = store.audit_trail()
    assert [(e.actor, e.action, e.record_id, e.owner) for e in trail] == [
        (ADMIN, "delete", second.id, ALICE),
        (ALICE, "delete", first.id, ALICE),
    ]
    assert trail[0].detail == "a quiet lake" and abs(trail[0].at - time.time()) < 60


def test_admin_restores_within_seven_days_then_it_is_purged(engine):
    """A deleted image is listed for admins and restorable for 7 days; after that, purged."""
    store = current_store()
    kept, lost = _add(store, owner=ALICE, seed=1), _add(store, owner=ALICE, seed=2)
    store.delete(kept.id, actor=ALICE)
    store.delete(lost.id, actor=ALICE)
    (listed_lost, listed_kept) = store.deleted()
    assert listed_kept.record.id == kept.id and listed_kept.deleted_by == ALICE
    assert listed_kept.purge_at == pytest.approx(listed_kept.deleted_at + WEEK)
    with pytest.raises(NotAllowed, match="Only an admin"):
        store.restore(kept.id, actor=ALICE, admin=False)
    assert store.restore(kept.id, actor=ADMIN, admin=True)
    assert store.get(kept.id).owner == ALICE and store.png_bytes(kept.id) is not None

    _age_delete(store, lost.id, WEEK + 60)
    assert not store.restore(lost.id, actor=ADMIN, admin=True)  # too late
    assert store.deleted() == []
    assert store.purge() == 1
    assert store.get(lost.id, include_deleted=True) is None and store.png_bytes(lost.id) is None
    assert [(e.actor, e.action) for e in store.audit_trail()][:2] == [
        ("system", "purge"),
        (ADMIN, "restore"),
    ]


def test_opening_the_store_purges_deletes_older_than_seven_days(engine):
    """A restart (opening the store) purges what was deleted more than 7 days ago."""
    from core.settings import load_settings

    store = current_store()
    old, recent = _add(store, seed=1), _add(store, seed=2)
    store.delete(old.id)
    store.delete(recent.id)
    _age_delete(store, old.id, WEEK + 60)
    history._STORES.clear()
    opened = history.open_store(load_settings())
    deadline = time.monotonic() + 30
    while opened.get(old.id, include_deleted=True) is not None:  # purged in the background
        assert time.monotonic() < deadline, "not purged"
        time.sleep(0.05)
    assert [d.record.id for d in opened.deleted()] == [recent.id]


def test_upgrade_from_schema_0001_makes_old_records_the_local_users(engine):
    """A history at version 0001 upgrades in place (Alembic, on open): rows kept, owned by
    the local user."""
    store = current_store()
    old = _add(store, seed=9)
    with store.engine.begin() as conn:  # back to 0001: what the app before this change left
        conn.execute(schema.audit.delete())
        for statement in (
            *UNDO_0006,
            "DROP TABLE inputs",  # 0005
            "ALTER TABLE records DROP COLUMN source_record",
            "ALTER TABLE records DROP COLUMN source_sha256",
            "ALTER TABLE records DROP COLUMN mask_sha256",
            "DROP TABLE reservations",  # 0004
            "DROP TABLE audit",
            "DROP INDEX records_owner",
            "DROP INDEX records_deleted",
            "ALTER TABLE records DROP COLUMN owner",
            "ALTER TABLE records DROP COLUMN deleted_at",
            "ALTER TABLE records DROP COLUMN deleted_by",
            "ALTER TABLE records DROP COLUMN family",  # and 0003's columns
            "ALTER TABLE records DROP COLUMN mode",
            "ALTER TABLE records DROP COLUMN mode_options",
            "UPDATE alembic_version SET version_num = '0001'",
        ):
            conn.exec_driver_sql(statement)
    store.engine.dispose()
    history._STORES.clear()
    upgraded = current_store()
    with upgraded.engine.connect() as conn:
        assert schema.current_version(conn) == schema.HEAD  # 0002, then every later one
    assert upgraded.get(old.id).owner == LOCAL_USER
    assert upgraded.delete(old.id)  # the local user owns it
    assert len(upgraded.audit_trail()) == 1


# --- the daily limit -------------------------------------------------------------------------
def test_daily_limit_counts_todays_images_from_the_store(engine):
    """Images made since 00:00 UTC count, deleted ones too; yesterday's and others' do not."""
    store = current_store()
    now = time.time()
    today = limits.day_start(now)
    _add(store, owner=ALICE, seed=1, created_at=today - 60)  # yesterday
    _add(store, owner=ALICE, seed=2, created_at=today + 1)
    gone = _add(store, owner=ALICE, seed=3, created_at=today + 2)
    _add(store, owner=BOB, seed=4, created_at=today + 3)
    store.delete(gone.id, actor=ALICE)
    allowance = limits.allowance(store, ALICE, 3, now=now)
    assert (allowance.used, allowance.left) == (2, 1)
    assert allowance.resets_at == today + 86_400
    allowance.check(1)
    with pytest.raises(limits.LimitReached, match="you have 1 left today"):
        allowance.check(2)
    # A fresh store on the same database (a restart, another replica) counts the same.
    history._STORES.clear()
    assert limits.allowance(current_store(), ALICE, 3, now=now).used == 2


def test_limit_reached_says_when_it_resets():
    """Over the limit, the message names 00:00 UTC and how long until then."""
    allowance = limits.Allowance(limit=5, used=5, resets_at=1_000_000.0 + 3 * 3600 + 300)
    with pytest.raises(limits.LimitReached) as info:
        allowance.check(1, now=1_000_000.0)
    assert "your 5 images for today" in str(info.value)
    assert "00:00 UTC (in 3 h 5 min)" in str(info.value)
    assert limits.Allowance(limit=0, used=99, resets_at=0).unlimited


# --- the pages ----------------------------------------------------------------------------------
@pytest.fixture(name="as_user")
def fixture_as_user(fresh_cache, monkeypatch):
    """Return a factory: the app with sign-in on (admin: ADMIN), as `email`, on a page."""
    from streamlit.testing.v1 import AppTest

    from .conftest import APP_FILE

    monkeypatch.setenv("SD_ADMINS", ADMIN)

    def make(email: str, page: str | None = GALLERY):
        at = AppTest.from_file(APP_FILE, default_timeout=120)
        at.secrets["auth"] = AUTH
        at.user = signed(email)
        at.run()
        if page is not None:
            at.switch_page(page).run()
        return at

    return make


def _texts(at) -> list[str]:
    return [t.value for t in at.text]


def _open(at, record_id):
    at.button(key=f"open_{record_id}").click().run()
    assert not at.exception
    return at


def test_gallery_shows_who_made_each_image_and_filters_mine(as_user, engine):
    """Everyone: both images with their maker; Mine: only the visitor's own."""
    store = current_store()
    _add(store, owner=ALICE, prompt="alice's lake", seed=1)
    _add(store, owner=BOB, prompt="bob's hill", seed=2)
    at = as_user(BOB)
    assert {"alice's lake", "bob's hill", f"by {ALICE}", f"by {BOB}"} <= set(_texts(at))
    at.get("button_group")[0].set_value("Mine").run()
    assert not at.exception
    assert "bob's hill" in _texts(at) and "alice's lake" not in _texts(at)


def test_other_user_is_not_offered_delete(as_user, engine):
    """Bob opens Alice's image: Details work, but there is no Delete."""
    saved = _add(current_store(), owner=ALICE)
    at = _open(as_user(BOB), saved.id)
    labels = [b.label for b in at.button]
    assert "Use these settings" in labels and "Delete" not in labels


def test_owner_deletes_their_image(as_user, engine):
    """Alice deletes her own image after confirming; it leaves the gallery for everyone."""
    store = current_store()
    saved = _add(store, owner=ALICE)
    at = _open(as_user(ALICE), saved.id)
    at.button(key="delete").click().run()
    at.button(key="confirm_delete").click().run()
    assert not at.exception
    assert store.get(saved.id) is None
    assert not any(e.value for e in at.expander if "Deleted images" in e.label)  # not admin
    assert any("0 images" in c.value for c in as_user(BOB).caption)


def test_admin_deletes_any_image_sees_the_trail_and_restores(as_user, engine):
    """An admin may delete Bob's image, sees it under Deleted images and in the audit
    trail, and Restore brings it back for everyone."""
    store = current_store()
    saved = _add(store, owner=BOB, prompt="bob's hill")
    at = _open(as_user(ADMIN), saved.id)
    at.button(key="delete").click().run()
    at.button(key="confirm_delete").click().run()
    assert not at.exception and store.get(saved.id) is None
    assert any(label.startswith("Deleted images (1)") for label in (e.label for e in at.expander))
    (row,) = [t for t in _texts(at) if t.startswith("Seed 5 · by bob@example.com")]
    assert f"deleted by {ADMIN}" in row and "bob's hill" in row
    trail = at.dataframe[0].value
    assert list(trail["who"]) == [ADMIN] and list(trail["what"]) == ["delete"]
    at.button(key=f"restore_{saved.id}").click().run()
    assert not at.exception
    assert store.get(saved.id) is not None
    assert "bob's hill" in _texts(as_user(BOB))


def test_generation_is_owned_by_the_signed_in_user(as_user, engine):
    """A generation by Alice is stored as hers."""
    at = as_user(ALICE, None)
    fill_small(at, prompt="alice's fox")
    at.button(key="generate").click().run()
    assert not at.exception and at.session_state["last_result"].history_error is None
    (record,) = current_store().page().records
    assert (record.owner, record.prompt) == (ALICE, "alice's fox")


def test_daily_limit_on_the_generator(as_user, engine, monkeypatch):
    """The generator shows what is left today; at the limit Generate is off and says when
    it resets; another user still has their own allowance."""
    monkeypatch.setenv("SD_DAILY_LIMIT", "2")
    store = current_store()
    _add(store, owner=ALICE, seed=1)
    at = as_user(ALICE, None)
    assert any("1 of 2 images left today" in c.value for c in at.caption)
    fill_small(at, prompt="the last one today")
    at.slider(key="num_images").set_value(2)
    at.button(key="generate").click().run()
    assert any("you have 1 left today" in e.value for e in at.error)
    assert store.count() == 1  # refused before the pipeline ran
    at.slider(key="num_images").set_value(1)
    at.button(key="generate").click().run()
    assert not at.exception and store.count() == 2
    at = as_user(ALICE, None)
    assert at.button(key="generate").disabled
    assert any("Generate works again at 00:00 UTC" in w.value for w in at.warning)
    bob = as_user(BOB, None)
    assert not bob.button(key="generate").disabled
    assert any("2 of 2 images left today" in c.value for c in bob.caption)


def test_a_copy_to_another_store_leaves_deleted_records_behind(tmp_path):
    """Moving a history (core.history.copy) does not bring deleted images back to life."""
    from core.history.copy import copy_history

    source = history.HistoryStore(tmp_path / "a")
    live, gone = _add(source, owner=ALICE, seed=1), _add(source, owner=ALICE, seed=2)
    source.delete(gone.id, actor=ALICE)
    destination = history.HistoryStore(tmp_path / "b")
    copy_history(source, destination, progress=False)
    assert destination.ids([live.id, gone.id]) == {live.id}
    assert destination.get(live.id).owner == ALICE


def test_regenerate_and_verify_counts_toward_the_daily_limit(as_user, engine, monkeypatch):
    """Regenerate & verify makes an image too: it is counted (and audited), and refused
    once the day's allowance is spent."""
    monkeypatch.setenv("SD_DAILY_LIMIT", "1")
    store = current_store()
    saved = _add(store, owner=BOB, created_at=time.time() - 2 * 86_400)
    at = _open(as_user(ALICE), saved.id)
    at.button(key="verify").click().run()
    assert not at.exception
    assert any("Regenerated" in m.value for m in [*at.success, *at.warning])
    assert store.made_since(ALICE, limits.day_start(time.time())) == 1
    assert [(e.actor, e.action) for e in store.audit_trail()] == [(ALICE, "regenerate")]
    at.button(key="verify").click().run()
    assert any("You have made your 1 image for today" in e.value for e in at.error)
    assert store.made_since(ALICE, limits.day_start(time.time())) == 1


def test_admin_panel_stays_hidden_until_something_was_deleted(app, engine):
    """Without sign-in (the local user is the admin) an untouched history shows no panel;
    after a delete, Deleted images offers the undo."""
    store = current_store()
    saved = _add(store)
    at = app(GALLERY)
    assert not [e for e in at.expander if e.label.startswith(("Deleted", "Audit"))]
    store.delete(saved.id)
    at.run()
    assert any(e.label.startswith("Deleted images (1)") for e in at.expander)
    at.button(key=f"restore_{saved.id}").click().run()
    assert not at.exception and store.get(saved.id) is not None
