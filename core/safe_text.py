"""Outside text on the page: quoted, never markup; secrets and server paths kept out.

Every `st.warning` / `st.error` / `st.caption` / `st.markdown` body is markdown, so a
value from a visitor (a link, an upload, a typed field) or from outside (a remote
service's error body, a model folder) must never be pasted into one as is:
`![](http://host/px.png)` would make every visitor's browser fetch that URL. The rule:

- messages are our own words; an outside value goes in through `quote()` (a one-line,
  length-capped code span, in which markdown and HTML are plain characters), or is drawn
  with `st.text` / `st.code`, which render no markup at all;
- text from a remote service passes `redact()` first (tokens, `Bearer …`);
- URLs that may carry credentials pass `display_url()`;
- server paths are shown only to a visitor on this machine (`paths_visible()`); every
  message a page shows goes through `for_visitor()`, which replaces them otherwise.

Pure functions: the visitor's address and whether they may see paths are arguments.
`ui.text` supplies them from Streamlit (`st.context.ip_address`) for the pages.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

log = logging.getLogger(__name__)

QUOTE_LIMIT = 80  # characters of an outside value quoted in a message
EXCERPT_LIMIT = 200  # characters of a remote error body quoted in a message
_REDACT_SCAN = 4096  # characters of outside text scanned for secrets before it is cut

# Token-like strings: Hugging Face tokens, `Bearer …` / `Basic …` credentials, and
# `token=` / `api_key=` / `password=` style pairs. Each is one linear pass (no nested
# quantifiers over the same characters), run on at most _REDACT_SCAN characters.
_SECRET_PATTERNS = (
    re.compile(r"\bhf_[A-Za-z0-9]+"),
    re.compile(r"\b((?i:bearer)|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(
        r"\b(api[_-]?key|access[_-]?token|token|secret|password|passwd|authorization)"
        r"(\"?\s*[:=]\s*\"?)[^\s\"',;&]+",
        re.IGNORECASE,
    ),
)
REDACTED = "[redacted]"

# SD_SHOW_PATHS: "auto" shows server paths to a visitor on this machine only.
SHOW_PATHS_CHOICES = ("auto", "always", "never")


def one_line(text: object, limit: int = QUOTE_LIMIT) -> str:
    """Collapse whitespace to single spaces and cut to `limit` characters (… when cut)."""
    raw = str(text)
    # Cut before splitting: a 20 MB value must not be split in full to show 80 characters.
    line = " ".join(raw[: limit * 4 + 16].split())
    if len(line) > limit or len(raw) > limit * 4 + 16:
        return line[: limit - 1].rstrip() + "…"
    return line


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """Return `value` as a markdown code span: one line, at most `limit` characters.

    Inside a code span markdown, HTML, links, `:color[]` directives and math are plain
    characters. Backticks are replaced (a backtick would end the span).
    """
    line = one_line(value, limit).replace("`", "ʼ")
    return f"`{line}`" if line.strip() else "`(empty)`"


# Characters markdown reads in running text: emphasis, code, links and images, HTML,
# strikethrough, math, tables, escapes, and `@` (GitHub-flavoured e-mail autolinks).
# `:` counts only before a non-space (`:red[`, `http://`); `_` only outside a word.
_MARKUP = re.compile(r"[`*\[\]<>~$|\\!@{}\n\r]|:\S|(?<![^\W_])_|_(?![^\W_])|www\.", re.I)


def inline(value: object, limit: int = QUOTE_LIMIT * 2) -> str:
    """`value` for running markdown text: as is when markdown reads nothing in it
    (`cpu (auto: no GPU found)`), otherwise quoted as a code span."""
    text = str(value)
    plain = len(text) <= limit and not _MARKUP.search(text) and text[:1] not in "-+=#>"
    return text if plain and text.strip() else quote(text, limit)


def redact(text: str, *, secrets: Iterable[str | None] = ()) -> str:
    """Replace token-like strings, and each of `secrets` itself, with `[redacted]`.

    Only the first few KB are scanned and kept: callers quote a short excerpt anyway.
    """
    out = str(text)[:_REDACT_SCAN]
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, REDACTED)
    out = _SECRET_PATTERNS[0].sub(REDACTED, out)
    out = _SECRET_PATTERNS[1].sub(lambda m: f"{m[1]} {REDACTED}", out)
    return _SECRET_PATTERNS[2].sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", out)


def excerpt(text: str, *, secrets: Iterable[str | None] = (), limit: int = EXCERPT_LIMIT) -> str:
    """A remote service's text, made safe to show: redacted, then a one-line code span."""
    return quote(redact(text, secrets=secrets), limit)


def display_url(url: str | None) -> str:
    """Return `url` without user-info (`user:pass@`), query values or fragment.

    `https://u:p@host:8443/run?key=abc&x=1` → `https://host:8443/run?key=…&x=…`. What is
    shown or stored never carries a credential that was written into the URL.
    """
    if not url:
        return ""
    if "://" not in str(url):  # no scheme: whatever precedes an @ is user-info
        return str(url).strip().split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
    try:
        parts = urlsplit(str(url).strip())
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 literal keeps its brackets
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # an invalid port or bracket: drop everything up to the last @
        text = str(url).strip()
        scheme, sep, rest = text.partition("://")
        netloc_end = len(rest.split("/", 1)[0].split("?", 1)[0])
        netloc = rest[:netloc_end].rpartition("@")[2]
        path = rest[netloc_end:].split("?", 1)[0].split("#", 1)[0]
        return f"{scheme}{sep}{netloc}{path}" if sep else netloc + path
    query = "&".join(f"{key}=…" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit(SplitResult(parts.scheme, host + port, parts.path, query, ""))


def url_secrets(url: str | None) -> list[str]:
    """The credentials written into a URL (user, password, query values), for `redact`."""
    if not url or "://" not in url:
        return [] if not url else [part for part in url.split("@")[:-1] if part]
    try:
        parts = urlsplit(url)
        found = [parts.username, parts.password]
    except ValueError:
        found = []
    found += [value for _, value in parse_qsl(urlsplit(url).query, keep_blank_values=True)]
    return [value for value in found if value]


# --- server paths ------------------------------------------------------------------------
def _is_loopback(ip: str | None) -> bool:
    if ip is None:  # Streamlit reports a loopback peer (127.0.0.1, ::1) as None
        return True
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def paths_visible(ip: str | None, *, setting: str | None = None) -> bool:
    """Decide whether a visitor connected from `ip` may see server paths (folders, the HF
    cache); None is what Streamlit reports for a loopback peer.

    The rule, in one place: `SD_SHOW_PATHS=always` / `never` decide outright; `auto`
    (the default) shows paths only to a visitor connected from this machine (a loopback
    address: the local single-user case). Anyone else reads "the data folder" and the
    like; the server log always has the full text. Behind a reverse proxy on the same
    host every visitor looks local: set SD_SHOW_PATHS=never there.
    """
    choice = (setting or os.environ.get("SD_SHOW_PATHS") or "auto").strip().lower()
    if choice == "always":
        return True
    if choice == "never":
        return False
    return _is_loopback(ip)


def server_paths(extra: Mapping[str, str | Path | None] | None = None) -> dict[str, str]:
    """Known server paths → the words shown instead, longest path first."""
    found: dict[str, str] = {}
    candidates: dict[str, str | Path | None] = dict(extra or {})
    try:
        from huggingface_hub import constants

        candidates.setdefault("the Hugging Face cache", constants.HF_HUB_CACHE)
        candidates.setdefault("the Hugging Face home", constants.HF_HOME)
    except ImportError:  # the light install always has huggingface_hub; be safe anyway
        pass
    candidates.setdefault("the app folder", Path(__file__).resolve().parent.parent)
    candidates.setdefault("the home folder", Path.home())
    for label, path in candidates.items():
        if not path:
            continue
        for variant in {str(path), str(Path(path).expanduser().resolve())}:
            if len(variant) > 1:
                found.setdefault(variant, label)
    return dict(sorted(found.items(), key=lambda item: -len(item[0])))


_logged: set[int] = set()


def hide_paths(text: str, paths: Mapping[str, str]) -> str:
    """Replace each known server path in `text` with its label (pure)."""
    for path, label in paths.items():
        if path in text:
            text = text.replace(path, f"<{label}>")
    return text


def is_model_folder(model: object) -> bool:
    """Whether SD_MODEL names a folder on this server (a path) rather than a Hub id."""
    text = str(model)
    return bool(text) and (text.startswith((".", "/", "~")) or Path(text).expanduser().exists())


def public_model_name(model: object) -> str:
    """SD_MODEL as it may leave the server (PNG text, records, exports): a Hub id as is, a
    local folder by its name only, never the server's path (`/srv/models/sd35` → `sd35`).
    The revision recorded beside it says exactly which weights those were."""
    text = str(model)
    if not is_model_folder(text):
        return text
    return Path(text).expanduser().resolve().name or "local folder"


def settings_paths(settings: Any) -> dict[str, str | Path | None]:
    """The folders a `Settings` names: the data folder, the LoRA folder, and the model when
    it is a folder."""
    paths: dict[str, str | Path | None] = {"the data folder": settings.data_dir}
    if getattr(settings, "lora_dir", None):
        paths["the LoRA folder"] = settings.lora_dir
    model = str(settings.model)
    if is_model_folder(model):
        paths["the model folder"] = Path(model).expanduser()
    return paths


def for_visitor(
    text: object,
    *,
    visible: bool,
    settings: Any = None,
    paths: Mapping[str, str | Path | None] | None = None,
) -> str:
    """A message about to be shown: server paths replaced unless `visible` (this visitor
    may see them, `paths_visible()`; the pages use `ui.text.for_visitor`, which decides).

    `settings` (a `core.settings.Settings`) names this deployment's folders; `paths` adds
    others (label → path). The HF cache, app and home folders are always known. The full
    message goes to the server log once.
    """
    message = str(text)
    known = dict(settings_paths(settings)) if settings is not None else {}
    known.update(paths or {})
    paths = known
    if visible:
        return message
    hidden = hide_paths(message, server_paths(paths))
    if hidden != message and hash(message) not in _logged and len(_logged) < 10_000:
        _logged.add(hash(message))
        log.warning("shown to a remote visitor with server paths hidden: %s", message)
    return hidden


# --- small display helpers ---------------------------------------------------------------
def plural(count: int, word: str, words: str | None = None) -> str:
    """`1 step`, `2 steps`."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def format_field(key: str, value: object) -> str:
    """A recorded value for the details view: durations in seconds, floats trimmed."""
    if isinstance(value, float) and not isinstance(value, bool):
        if not math.isfinite(value):
            return str(value)
        if key.endswith("_seconds"):
            return f"{value:.1f} s"
        return f"{value:.6g}"
    return str(value)
