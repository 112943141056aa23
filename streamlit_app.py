"""Entry point: the sign-in gate, then route to the pages; model status and user in the sidebar."""

from pathlib import Path

import streamlit as st

from ui.access import require_visitor, visitor_or_none
from ui.sidebar import draw_sidebar

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
draw_sidebar(visitor)
page.run()
