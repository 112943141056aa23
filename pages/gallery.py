"""Seed history: placeholder until the gallery lands."""

import streamlit as st

st.title("Seed history")
st.info(
    "Coming next: every image saved with its settings, searchable by prompt and seed, "
    "and reproducible bit for bit."
)
