"""Sign-in: who the visitor is, the allowed list, admins, and the gate on every page."""

from __future__ import annotations

import pytest

from core.auth import LOCAL_USER, is_listed, sign_in_enabled, visitor_from
from core.settings import SettingsError, load_settings
from testkit.hostile import outside_code_spans

PAGES = [None, "pages/gallery.py", "pages/hardware.py"]  # None: the default page, Generate
AUTH = {
    "client_id": "sd35-dashboard",
    "client_secret": "not-a-secret",
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "test-cookie-secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
    "client_kwargs": {"prompt": "login"},
}


def signed(email: str | None, name: str = "") -> dict:
    """An AppTest user: signed in with these claims, or (email None) signed out."""
    if email is None:
        return {"is_logged_in": False}
    return {"is_logged_in": True, "email": email, "name": name}


@pytest.fixture(name="signin_app")
def fixture_signin_app(fresh_cache):
    """Return a factory: the whole app with an [auth] secret, a user, opened on a page."""
    from streamlit.testing.v1 import AppTest

    from .conftest import APP_FILE

    def make(user: dict, page: str | None = None):
        at = AppTest.from_file(APP_FILE, default_timeout=120)
        at.secrets["auth"] = AUTH
        at.user = user
        at.run()
        if page is not None:
            at.switch_page(page).run()
        return at

    return make


def _labels(at) -> list[str]:
    return [b.label for b in at.button]


# --- plain rules ---------------------------------------------------------------------------
def test_sign_in_is_on_only_with_an_auth_section():
    """An [auth] section turns sign-in on; none, or an empty one, leaves it off."""
    assert sign_in_enabled({"auth": AUTH})
    assert not sign_in_enabled({})
    assert not sign_in_enabled({"auth": {}})
    assert not sign_in_enabled({"auth": "not a section"})
    assert not sign_in_enabled(None)


def test_emails_and_domains_match_case_insensitively_and_exactly():
    """ "@example.com" admits its own domain only; emails match whole, in any case."""
    entries = ("Alice@Example.org", "@example.com")
    assert is_listed("alice@example.org", entries)
    assert is_listed("BOB@EXAMPLE.COM", entries)
    assert not is_listed("bob@sub.example.com", entries)
    assert not is_listed("bob@evil-example.com", entries)
    assert not is_listed("alice@example.org.evil.net", entries)
    assert not is_listed("example.com", entries)
    assert not is_listed("", entries)


def test_without_sign_in_everyone_is_the_local_user_with_admin_rights():
    """No [auth]: one identity, "local", which owns its records and may delete and restore."""
    visitor = visitor_from({"email": "whoever@example.com"}, sign_in_on=False)
    assert visitor.id == LOCAL_USER and visitor.may_use_app and visitor.is_admin
    assert visitor.may_delete(None) and visitor.may_delete(LOCAL_USER)


def test_claims_are_read_defensively():
    """Missing, non-text or oversized claims do not break the rules; no email → refused."""
    assert not visitor_from({}, sign_in_on=True).may_use_app
    assert not visitor_from({"is_logged_in": "yes"}, sign_in_on=True).may_use_app
    no_email = visitor_from({"is_logged_in": True, "name": "Sam"}, sign_in_on=True)
    assert no_email.signed_in and not no_email.may_use_app and no_email.name == "Sam"
    odd = visitor_from(
        {"is_logged_in": True, "email": "A@B.org", "name": ["not", "text"]}, sign_in_on=True
    )
    assert (odd.id, odd.name) == ("a@b.org", "")
    long = visitor_from(
        {"is_logged_in": True, "email": "a@b.org", "name": "x" * 5000}, sign_in_on=True
    )
    assert len(long.name) <= 254


def test_an_email_the_provider_did_not_verify_is_refused():
    """email_verified=false: refused even for an admin's address; absent: accepted."""
    claims = {"is_logged_in": True, "email": "boss@example.com", "email_verified": False}
    visitor = visitor_from(claims, sign_in_on=True, admins=("boss@example.com",))
    assert not visitor.may_use_app and not visitor.is_admin and not visitor.email_verified
    assert visitor_from(signed("boss@example.com"), sign_in_on=True).may_use_app


def test_unverified_email_is_told_on_the_page(signin_app):
    """The page names the unverified email and offers Log out, nothing else."""
    at = signin_app({**signed("eve@example.com"), "email_verified": False})
    assert "not verified" in at.error[0].value
    assert [c.value for c in at.code] == ["eve@example.com"]
    assert _labels(at) == ["Log out"]


def test_allowed_list_and_admins():
    """Empty list: any signed-in user; otherwise only listed ones; admins always get in."""
    anyone = visitor_from(signed("eve@evil.org"), sign_in_on=True)
    assert anyone.may_use_app and not anyone.is_admin
    rules = {"allowed_users": ("@example.com",), "admins": ("boss@elsewhere.net",)}
    assert not visitor_from(signed("eve@evil.org"), sign_in_on=True, **rules).may_use_app
    bob = visitor_from(signed("bob@example.com"), sign_in_on=True, **rules)
    assert bob.may_use_app and not bob.is_admin
    assert bob.may_delete("bob@example.com") and not bob.may_delete("carol@example.com")
    boss = visitor_from(signed("Boss@Elsewhere.net"), sign_in_on=True, **rules)
    assert boss.may_use_app and boss.is_admin and boss.may_delete("carol@example.com")


# --- settings ------------------------------------------------------------------------------
def test_sharing_settings_are_parsed_lower_cased(tmp_path):
    """Lists are split on commas and lower-cased; the numbers are read as numbers."""
    settings = load_settings(
        environ={
            "SD_ALLOWED_USERS": " Alice@Example.org, @Example.com ,",
            "SD_ADMINS": "Boss@Example.com",
            "SD_MAX_QUEUED_PER_USER": "3",
            "SD_DAILY_LIMIT": "50",
        },
        dotenv_path=tmp_path / "none",
    )
    assert settings.allowed_users == ("alice@example.org", "@example.com")
    assert settings.admins == ("boss@example.com",)
    assert (settings.max_queued_per_user, settings.daily_limit) == (3, 50)


def test_sharing_defaults(tmp_path):
    """By default: anyone signed in, no admins, 2 waiting per user, no daily limit."""
    settings = load_settings(environ={}, dotenv_path=tmp_path / "none")
    assert (settings.allowed_users, settings.admins) == ((), ())
    assert (settings.max_queued_per_user, settings.daily_limit) == (2, 0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SD_ALLOWED_USERS", "alice", "not an email"),
        ("SD_ALLOWED_USERS", "alice@example.com; bob@example.com", "comma-separated"),
        ("SD_ADMINS", "@example.com", "not an email"),
        ("SD_MAX_QUEUED_PER_USER", "0", "from 1 to 100"),
        ("SD_MAX_QUEUED_PER_USER", "two", "from 1 to 100"),
        ("SD_DAILY_LIMIT", "-1", "0 \\(unlimited\\)"),
        ("SD_DAILY_LIMIT", "1.5", "0 \\(unlimited\\)"),
    ],
)
def test_bad_sharing_settings_name_the_fix(tmp_path, name, value, message):
    """A bad list entry or number is refused with what would be valid."""
    with pytest.raises(SettingsError, match=message):
        load_settings(environ={name: value}, dotenv_path=tmp_path / "none")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SD_ALLOWED_USERS", "![x](http://127.0.0.1:9/px.png)"),
        ("SD_ADMINS", "**boss**"),
        ("SD_MAX_QUEUED_PER_USER", "![x](http://127.0.0.1:9/px.png)"),
        ("SD_DAILY_LIMIT", "**ten**"),
    ],
)
def test_bad_sharing_setting_is_quoted_not_rendered(tmp_path, name, value):
    """The refused value is named as a code span: pages show the message as markdown (and
    a broken SD_ALLOWED_USERS is shown to every visitor of a signed-in app)."""
    with pytest.raises(SettingsError) as refused:
        load_settings(environ={name: value}, dotenv_path=tmp_path / "none")
    message = str(refused.value)
    assert name in message and value in message
    assert value not in outside_code_spans(message)


# --- the gate on every page ----------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_signed_out_visitor_sees_only_the_sign_in_screen(signin_app, page):
    """Not signed in: a Log in button and nothing else on any page (no model, no facts)."""
    at = signin_app(signed(None), page)
    assert not at.exception
    assert _labels(at) == ["Log in"]
    assert [t.value for t in at.title] == ["SD3.5 Medium dashboard"]
    assert not at.sidebar.children or not any(at.sidebar.text)
    assert not at.text_area and not at.number_input and not at.subheader
    from core.service import get_backend

    assert get_backend().state == "not loaded"


@pytest.mark.parametrize("page", PAGES)
def test_signed_in_user_not_on_the_list_is_told_plainly(signin_app, monkeypatch, page):
    """A signed-in email not on SD_ALLOWED_USERS is named, refused, and offered Log out."""
    monkeypatch.setenv("SD_ALLOWED_USERS", "@example.com")
    at = signin_app(signed("eve@evil-example.com", "Eve"), page)
    assert not at.exception
    assert "not on the app's list of allowed users" in at.error[0].value
    assert [c.value for c in at.code] == ["eve@evil-example.com"]
    assert _labels(at) == ["Log out"]
    assert not at.text_area and not at.number_input and not at.subheader


def test_bad_allowed_users_setting_opens_nothing(signin_app, monkeypatch):
    """With sign-in on, a broken SD_ALLOWED_USERS shows the fix and nothing else."""
    monkeypatch.setenv("SD_ALLOWED_USERS", "alice")
    at = signin_app(signed("alice@example.com"))
    assert any("SD_ALLOWED_USERS" in e.value for e in at.error)
    assert not at.button and not at.text_area


def test_signed_in_user_sees_name_email_and_log_out(signin_app, monkeypatch):
    """Signed in: the generator, and name, email and Log out in the sidebar as plain text."""
    monkeypatch.setenv("SD_ALLOWED_USERS", "@example.com")
    at = signin_app(signed("Bob@Example.com", "**Bob** [x](http://e.x)"))
    assert not at.exception
    assert "Generate" in _labels(at)
    sidebar_texts = [t.value for t in at.sidebar.text]
    assert "**Bob** [x](http://e.x)" in sidebar_texts  # as typed: never markdown
    assert "bob@example.com" in sidebar_texts
    assert [b.label for b in at.sidebar.button] == ["Log out"]
    assert not any("admin" in c.value for c in at.sidebar.caption)


@pytest.mark.parametrize("page", PAGES)
def test_allowed_user_reaches_every_page(signin_app, monkeypatch, page):
    """An allowed user gets the page itself, not the gate."""
    monkeypatch.setenv("SD_ALLOWED_USERS", "bob@example.com")
    at = signin_app(signed("bob@example.com"), page)
    assert not at.exception
    assert "Log in" not in _labels(at)
    assert at.title[0].value in ("Generate", "Seed history", "Hardware")


def test_log_out_signs_the_user_out(signin_app):
    """Log out (st.logout) leaves the visitor on the sign-in screen."""
    at = signin_app(signed("bob@example.com"))
    at.sidebar.button(key="logout").click().run()
    assert not at.exception
    assert _labels(at) == ["Log in"]


def test_without_sign_in_there_is_no_log_in_or_log_out(app):
    """No [auth] section: the app opens straight on the generator, as before."""
    at = app()
    assert "Generate" in _labels(at)
    assert "Log in" not in _labels(at) and "Log out" not in _labels(at)


def test_admin_sees_the_whole_queue_and_cancels_an_entry(signin_app, monkeypatch):
    """Hardware page: an admin sees who waits for what since when, and Cancel removes it."""
    from core.service import get_backend

    monkeypatch.setenv("SD_ADMINS", "boss@example.com")
    queue = get_backend().queue
    with queue.slot(user="alice@example.com", label="4 × 1024×1024, 40 steps") as held:
        other = signin_app(signed("bob@example.com"), "pages/hardware.py")
        assert not other.exception
        assert any("1 running · 0 waiting" in c.value for c in other.caption)
        assert not [b for b in other.button if b.label == "Cancel"]
        assert not any("alice@example.com" in t.value for t in other.text)

        at = signin_app(signed("boss@example.com"), "pages/hardware.py")
        assert not at.exception
        (row,) = [t.value for t in at.text if "alice@example.com" in t.value]
        assert row.startswith("running · alice@example.com · 4 × 1024×1024, 40 steps · since")
        at.button(key=f"cancel_{held.id}").click().run()
        assert not at.exception
        assert held.cancelled_by == "boss@example.com"  # the running request is told to stop


def test_generator_refuses_a_third_waiting_request_plainly(signin_app, monkeypatch):
    """With 2 of Alice's requests waiting, her next Generate says so (and is not a "Stop")."""
    import threading
    import time

    from core.service import get_backend

    from .conftest import fill_small

    queue = get_backend().queue
    waiters = []

    def wait_in_line() -> None:
        with queue.slot(user="alice@example.com", poll=0.01):
            pass

    with queue.slot(user="someone@example.com"):
        for _ in range(2):
            waiters.append(threading.Thread(target=wait_in_line, daemon=True))
            waiters[-1].start()
        while queue.waiting < 2:
            time.sleep(0.01)
        at = signin_app(signed("alice@example.com"))
        fill_small(at)
        at.button(key="generate").click().run()
        assert not at.exception
        assert any("You already have 2 waiting" in e.value for e in at.error)
        at.run()
        assert not any("Stopped" in w.value for w in at.warning)
    for waiter in waiters:
        waiter.join(10)
    assert not queue.busy and queue.waiting == 0
