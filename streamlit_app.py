"""Entry point: the sign-in gate, then route to the pages; model status and user in the sidebar."""

from pathlib import Path

import streamlit as st

from core.access import require_visitor, user_box, visitor_or_none
from core.demo import DEMO_LABEL, DEMO_MODEL
from core.safe_text import for_visitor, quote

# Importing the service pulls in no torch: the status below costs nothing to draw.
from core.service import current_settings, get_backend
from core.settings import SettingsError

HERE = Path(__file__).parent

st.set_page_config(
    page_title="SD3.5 Medium dashboard", page_icon=":material/palette:", layout="wide"
)

page = st.navigation(
    [
        st.Page(
            HERE / "pages" / "generate.py", title="Generate", icon=":material/brush:", default=True
        ),
        st.Page(
            HERE / "pages" / "gallery.py", title="Seed history", icon=":material/photo_library:"
        ),
        st.Page(HERE / "pages" / "hardware.py", title="Hardware", icon=":material/memory:"),
    ],
    # Nobody sees the page list before sign-in; the URL's page is kept for afterwards.
    position="sidebar" if visitor_or_none() is not None else "hidden",
)
# Not signed in (or not allowed): the sign-in screen and nothing else, no model status.
visitor = require_visitor()

with st.sidebar:
    user_box(visitor)
    try:
        settings = current_settings()
    except SettingsError as exc:
        st.error(for_visitor(exc))
    else:
        facts = get_backend(settings).describe()
        st.caption("Model")
        st.text(for_visitor(settings.model, settings=settings))
        if settings.model == DEMO_MODEL:
            st.warning(DEMO_LABEL, icon=":material/science:")
        where = f" on {facts['device']} · {facts['dtype']}" if "device" in facts else ""
        st.caption(f"Status: {facts['state']}{where}")
        if facts.get("backend") == "remote":
            st.caption(f"Remote: {quote(facts.get('endpoint') or facts.get('provider'), 60)}")

page.run()
