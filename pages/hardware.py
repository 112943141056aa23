"""Hardware: placeholder until the hardware page lands."""

import streamlit as st

st.title("Hardware")
st.info(
    "Coming next: the device and dtype in use and why, GPU and system memory, memory "
    "plans, and buttons to load or unload the model."
)
