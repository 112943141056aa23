"""The sign-in gate every page passes, and the signed-in user's sidebar box.

The Streamlit side of `core.auth`: `require_visitor()` returns the visitor when they may use
the app; otherwise it draws the sign-in screen (or says plainly why not) and stops the run,
so nothing else of the page is drawn and no model load can start. The entry script calls it
before running a page, and each page calls it again first thing (through `ui.page.start`):
a page reached any other way (AppTest's `switch_page` runs the page alone) is gated by the
same code.
"""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from core.auth import LOCAL_VISITOR, Visitor, sign_in_enabled, visitor_from
from core.service import current_settings
from core.settings import Settings, SettingsError


def auth_secrets() -> Mapping[str, object]:
    """The `[auth]` section of the secrets (empty when sign-in is off)."""
    try:
        section = st.secrets.get("auth")
    except FileNotFoundError:
        return {}
    return section if isinstance(section, Mapping) else {}


def current_visitor(settings: Settings | None = None) -> Visitor:
    """Who is running this script: from `st.user` when sign-in is on, else the local user.

    Raise `SettingsError` for a bad SD_ALLOWED_USERS / SD_ADMINS value.
    """
    settings = settings or current_settings()
    on = sign_in_enabled({"auth": auth_secrets()})
    # Without an [auth] section st.user has no is_logged_in at all: read it only when on.
    claims = st.user.to_dict() if on else None
    return visitor_from(
        claims, sign_in_on=on, allowed_users=settings.allowed_users, admins=settings.admins
    )


def visitor_or_none() -> Visitor | None:
    """The visitor if they may use the app, else None (draws nothing)."""
    try:
        visitor = current_visitor(current_settings())
    except SettingsError:
        return None if sign_in_enabled({"auth": auth_secrets()}) else LOCAL_VISITOR
    return visitor if visitor.may_use_app else None


def _providers() -> list[str | None]:
    """`st.login` targets: None for a single `[auth]` provider, else each `[auth.NAME]`."""
    section = auth_secrets()
    named = [name for name, value in section.items() if isinstance(value, Mapping)]
    return [None] if "client_id" in section or not named else named


def _gate(visitor: Visitor) -> None:
    """What a visitor who may not use the app sees: sign in, or why not. Nothing else."""
    st.title("SD3.5 Medium dashboard")
    if not visitor.signed_in:
        st.write("Sign in to generate images and see the seed history.")
        providers = _providers()
        for provider in providers:
            label = "Log in" if len(providers) == 1 else f"Log in with {provider}"
            key = f"login_{provider or 'default'}"
            if st.button(label, key=key, type="primary", icon=":material/login:"):
                st.login() if provider is None else st.login(provider)
        return
    if not visitor.email:
        st.error(
            "Your sign-in provider did not share an email address, and this app needs one to "
            "know who you are. Ask the app's owner to request the email scope."
        )
    elif not visitor.email_verified:
        st.error("Your sign-in provider says this email address is not verified:")
        st.code(visitor.email, language=None)
        st.write("Verify it with your provider, then log out and sign in again.")
    else:
        st.error("You are signed in, but this account is not on the app's list of allowed users:")
        st.code(visitor.email, language=None)
        st.write("Ask the app's owner to add you, or log out and sign in with another account.")
    st.button("Log out", key="logout", on_click=st.logout)


def require_visitor() -> Visitor:
    """Return the visitor, or draw the sign-in / refusal screen and stop the run."""
    try:
        visitor = current_visitor(current_settings())
    except SettingsError as exc:
        if sign_in_enabled({"auth": auth_secrets()}):
            # A bad SD_ALLOWED_USERS / SD_ADMINS must not open a signed-in app to everyone.
            st.error(str(exc))
            st.stop()
        return LOCAL_VISITOR  # without sign-in the page itself names the bad setting
    if not visitor.may_use_app:
        _gate(visitor)
        st.stop()
    return visitor


def user_box(visitor: Visitor) -> None:
    """Who is signed in, and the way out (names and emails as plain text, never markup)."""
    if not visitor.signed_in:
        return
    st.caption("Signed in" + (" · admin" if visitor.is_admin else ""))
    if visitor.name:
        st.text(visitor.name)
    st.text(visitor.email)
    st.button("Log out", key="logout", icon=":material/logout:", on_click=st.logout)
