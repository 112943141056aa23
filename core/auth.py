"""Who is using the app: sign-in state, the allowed-users list, admin rights (plain Python).

Sign-in is Streamlit's own (`st.login` / `st.user` / `st.logout`, OIDC). It is on when the
secrets hold an `[auth]` section, Streamlit's convention; off otherwise. Without sign-in the
app has one user, `LOCAL_USER`: every visitor is that user, owns everything made without
sign-in and has admin rights (the local dashboard's single person; a shared deployment
turns sign-in on).

The pages never read `st.user` themselves: `core.access` builds a `Visitor` with
`visitor_from()` from `st.user`'s claims and the settings, so every rule (ownership, admin
actions, queue limits, the daily limit) asks one object. Claims differ between providers,
so they are read with `.get` and bounded in length; the email is the identity, lower-cased.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LOCAL_USER = "local"
MAX_CLAIM_CHARS = 254  # the longest valid email address; names are cut to the same


@dataclass(frozen=True)
class Visitor:
    """One visitor as the rules see them.

    `id` is the owner stored on records and the queue's user: the lower-cased email when
    signed in, `LOCAL_USER` without sign-in, "" when nobody is signed in yet.
    """

    id: str
    name: str = ""
    email: str = ""
    signed_in: bool = False
    sign_in_on: bool = False
    allowed: bool = True
    is_admin: bool = False
    email_verified: bool = True  # False only when the provider says so explicitly

    @property
    def may_use_app(self) -> bool:
        """Whether the pages may show anything beyond the sign-in or refusal screen."""
        return bool(self.id) and self.allowed

    def may_delete(self, owner: str | None) -> bool:
        """The owner of a record and admins may delete it; nobody else."""
        return self.may_use_app and (self.is_admin or (owner or LOCAL_USER) == self.id)


LOCAL_VISITOR = Visitor(id=LOCAL_USER, name="Local user", allowed=True, is_admin=True)


def sign_in_enabled(secrets: Mapping[str, object] | None) -> bool:
    """Sign-in is on when the secrets have an `[auth]` section (Streamlit's convention)."""
    if not secrets:
        return False
    try:
        section = secrets.get("auth")
    except (FileNotFoundError, KeyError):
        return False
    return isinstance(section, Mapping) and len(section) > 0


def _claim(user: Mapping[str, object], name: str) -> str:
    value = user.get(name)
    if not isinstance(value, str):
        return ""
    return " ".join(value.split())[:MAX_CLAIM_CHARS]


def is_listed(email: str, entries: tuple[str, ...] | list[str]) -> bool:
    """Whether `email` matches an entry: the same email, or an `@domain` entry for its domain.

    Case-insensitive. "@example.com" matches "a@example.com" but not "a@sub.example.com"
    nor "a@evil-example.com".
    """
    email = email.strip().lower()
    if not email or "@" not in email:
        return False
    domain = "@" + email.rpartition("@")[2]
    for entry in entries:
        entry = entry.strip().lower()
        if entry == email or (entry.startswith("@") and entry == domain):
            return True
    return False


def visitor_from(
    user: Mapping[str, object] | None,
    *,
    sign_in_on: bool,
    allowed_users: tuple[str, ...] = (),
    admins: tuple[str, ...] = (),
) -> Visitor:
    """Build the visitor from `st.user`'s claims (a mapping) and the sharing settings.

    Without sign-in: the local user. With sign-in but not signed in: an anonymous visitor
    (`id == ""`). Signed in without an email claim: refused, since the email is the identity
    the allowed list, ownership and limits are about.
    """
    if not sign_in_on:
        return LOCAL_VISITOR
    user = user or {}
    if user.get("is_logged_in") is not True:
        return Visitor(id="", sign_in_on=True, allowed=False)
    email = _claim(user, "email").lower()
    name = _claim(user, "name") or _claim(user, "preferred_username")
    if not email or "@" not in email:
        # Some providers leave the email out unless the "email" scope is granted.
        return Visitor(id="", name=name, signed_in=True, sign_in_on=True, allowed=False)
    if user.get("email_verified") in (False, "false"):
        # Anyone can type someone else's address into a provider's sign-up form: an email
        # the provider has not verified proves nothing (least of all admin rights).
        return Visitor(
            id="",
            name=name,
            email=email,
            signed_in=True,
            sign_in_on=True,
            allowed=False,
            email_verified=False,
        )
    allowed = not allowed_users or is_listed(email, allowed_users) or is_listed(email, admins)
    return Visitor(
        id=email,
        name=name,
        email=email,
        signed_in=True,
        sign_in_on=True,
        allowed=allowed,
        is_admin=allowed and is_listed(email, admins),
    )
