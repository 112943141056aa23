"""The sign-in gate every page passes, and the signed-in user's sidebar box.

The Streamlit side of `core.auth`: `require_visitor()` returns the visitor when they may use
the app; otherwise it draws the sign-in screen (or says plainly why not) and stops the run,
so nothing else of the page is drawn and no model load can start. The entry script calls it
before running a page, and each page calls it again first thing: a page reached any other way
(AppTest's `switch_page` runs the page alone) is gated by the same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import streamlit as st

from core.auth import LOCAL_VISITOR, Visitor, sign_in_enabled
from core.service import auth_secrets, current_settings, current_visitor
from core.settings import Settings, SettingsError

if TYPE_CHECKING:
    from core.limits import Allowance


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


def daily_allowance(
    settings: Settings, visitor: Visitor, *, wanted: int = 1
) -> tuple[Allowance | None, str | None]:
    """Today's allowance under SD_DAILY_LIMIT (None when unlimited) and, when `wanted` more
    images would go over it or it cannot be counted, the message that says why and when.

    Fails closed: a history that cannot be read does not lift the limit.
    """
    if settings.daily_limit <= 0:
        return None, None
    from core import history, limits  # only apps with a limit pay for these imports here

    try:
        allowance = limits.allowance(history.open_store(settings), visitor.id, settings.daily_limit)
        allowance.check(wanted)
    except limits.LimitReached as exc:
        return allowance, str(exc)
    except history.HistoryError as exc:
        from core.safe_text import for_visitor  # server paths only for a visitor on this machine

        reason = for_visitor(exc, settings=settings)
        return None, f"The daily limit cannot be counted, so nothing can be generated now: {reason}"
    return allowance, None
