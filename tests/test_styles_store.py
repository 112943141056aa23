"""Styles in the history database, on SQLite and PostgreSQL: each person's own, published
ones for everyone, who may change what, and A1111's styles.csv in and out."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from core.history import HistoryError, NotAllowed, saved_styles, schema
from core.styles import Style, export_csv, import_csv

from .conftest import current_store

ALICE, BOB, ADMIN = "alice@example.com", "bob@example.com", "admin@example.com"
FILM = Style("Film", "{prompt}, 35mm film, grain", "digital, smooth")
INK = Style("Ink", "ink drawing of {prompt}", "")


def _names(store, owner):
    return [(s.name, s.owner, s.shared) for s in store.styles.visible(owner)]


def test_save_list_replace_and_delete_own_styles(engine):
    """A person sees only their own styles, sorted by name; saving a name again replaces
    it; deleting removes it; nobody else sees or deletes it."""
    store = current_store()
    store.styles.save(ALICE, INK)
    store.styles.save(ALICE, FILM)
    store.styles.save(ALICE, Style("Film", "{prompt}, 70mm", ""))
    assert _names(store, ALICE) == [("Film", ALICE, False), ("Ink", ALICE, False)]
    assert store.styles.visible(ALICE)[0].style.prompt == "{prompt}, 70mm"
    assert store.styles.visible(BOB) == []
    with pytest.raises(NotAllowed):
        store.styles.delete(ALICE, "Ink", actor=BOB, admin=False)
    assert store.styles.delete(ALICE, "Ink", actor=ALICE, admin=False)
    assert not store.styles.delete(ALICE, "Ink", actor=ALICE, admin=False)
    assert _names(store, ALICE) == [("Film", ALICE, False)]


def test_only_admins_publish_and_a_persons_own_style_shadows_a_published_one(engine):
    """An admin publishes a style to everyone (and withdraws it); a non-admin cannot; a
    person's own style of the same name is the one they see."""
    store = current_store()
    store.styles.save(ADMIN, FILM)
    store.styles.save(ADMIN, INK)
    with pytest.raises(NotAllowed):
        store.styles.publish(ADMIN, "Film", shared=True, actor=BOB, admin=False)
    assert store.styles.publish(ADMIN, "Film", shared=True, actor=ADMIN, admin=True)
    assert _names(store, BOB) == [("Film", ADMIN, True)]
    store.styles.save(BOB, Style("Film", "bob's {prompt}", ""))
    (mine,) = store.styles.visible(BOB)
    assert (mine.owner, mine.style.prompt) == (BOB, "bob's {prompt}")
    assert store.styles.delete(ADMIN, "Film", actor=ADMIN, admin=True)  # published: admins
    assert store.styles.publish(ADMIN, "Ink", shared=True, actor=ADMIN, admin=True)
    assert store.styles.publish(ADMIN, "Ink", shared=False, actor=ADMIN, admin=True)
    assert _names(store, ALICE) == []


def test_styles_csv_round_trip_through_the_store(engine):
    """Export what Alice sees as A1111's styles.csv; Bob imports it: he then has the same
    styles as his own, byte for byte the same file when he exports."""
    store = current_store()
    tricky = Style('Quote "and", comma', "=cmd|' /C calc'!A0, {prompt}", "línea\nnueva")
    for style in (FILM, INK, tricky):
        store.styles.save(ALICE, style)
    data = export_csv([s.style for s in store.styles.visible(ALICE)])
    read = import_csv(data)
    assert read.skipped == () and store.styles.save_many(BOB, read.styles) == 3
    assert [s.style for s in store.styles.visible(BOB)] == [
        s.style for s in store.styles.visible(ALICE)
    ]
    assert export_csv([s.style for s in store.styles.visible(BOB)]) == data


def test_a_person_keeps_at_most_the_cap_and_rows_edited_into_garbage_are_left_out(
    engine, monkeypatch
):
    """Past MAX_STYLES_PER_OWNER a new name is refused (replacing one still works); a row
    that is not a valid style (an edited database) is left out of the list."""
    monkeypatch.setattr(saved_styles, "MAX_STYLES_PER_OWNER", 2)
    store = current_store()
    store.styles.save(ALICE, FILM)
    store.styles.save(ALICE, INK)
    with pytest.raises(HistoryError, match="You have 2 styles"):
        store.styles.save(ALICE, Style("Third", "{prompt}"))
    store.styles.save(ALICE, Style("Ink", "new ink {prompt}"))
    with store.engine.begin() as conn:
        conn.execute(
            insert(schema.styles).values(
                owner=ALICE, name="x" * 500, prompt="", created_at=0.0, updated_at=0.0
            )
        )
    assert [s.name for s in store.styles.visible(ALICE)] == ["Film", "Ink"]
