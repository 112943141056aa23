"""Skip-layer guidance on the generator: a toggle with the model family's values (layers,
scale, start, stop) editable in an expander. The family decides whether it starts on
(SD3.5 Medium: on, as its card recommends; Large: off). It runs only with guidance on.

The values are the `slg` option of every mode (`core.modes.shared.SLG_OPTION`): "off", or
"layers 7 8 9; scale 2.8; start 0.01; stop 0.2" as the infotext writes them.
"""

from __future__ import annotations

import streamlit as st

from core import slg
from core.models import Family

ON = "slg_on"
LAYERS, SCALE, START, STOP = "slg_layers", "slg_scale", "slg_start", "slg_stop"
SHOWN = "slg_shown"  # the option value the widgets were last set from (or made)
ERROR = "slg_error"


def _from_option(value: str, family: Family) -> None:
    """Set the widgets from the form's `slg` value (a link, an import, a record, a page
    change): its values when on, the family's when off."""
    state = st.session_state
    guide = slg.from_option(value) if value != slg.OFF else None
    values = guide or family.slg_defaults()
    state[ON] = guide is not None
    state[LAYERS] = " ".join(map(str, values.layers))
    state[SCALE], state[START], state[STOP] = values.scale, values.start, values.stop


def _to_option() -> str:
    """The `slg` value the widgets say ("off", or the values); keep the last good one and
    say why when the typed layers are not valid."""
    state = st.session_state
    state.pop(ERROR, None)
    if not state[ON]:
        return slg.OFF
    try:
        layers = tuple(int(x) for x in str(state[LAYERS]).replace(",", " ").split())
        guide = slg.SkipLayerGuidance(
            layers=layers,
            scale=float(state[SCALE]),
            start=float(state[START]),
            stop=float(state[STOP]),
        )
    except ValueError as exc:
        state[ERROR] = f"Skip layer guidance not changed: {exc}"
        return str(state.get("slg", slg.OFF))
    return guide.infotext()


def controls(family: Family, *, remote: bool = False) -> None:
    """The toggle, its expander and the one-line reason when it cannot run now (`remote`:
    a remote service takes its task's settings only, so SLG is off there)."""
    state = st.session_state
    value = str(state.get("slg", slg.OFF))
    if state.get(SHOWN) != value or ON not in state:
        try:
            _from_option(value, family)
        except slg.SLGError:  # a stored value no longer valid: start from the family's
            _from_option(slg.OFF, family)
    if remote:
        state[ON] = False
    default = "on" if family.slg_on else "off"
    st.toggle(
        "Skip layer guidance",
        key=ON,
        help=f"{slg.SLG_HELP} {family.label}: {default} by default.",
        disabled=remote,
    )
    if remote:
        st.caption(slg.REMOTE_NOTE)
    with st.expander("Skip layer guidance values", expanded=False):
        st.text_input(
            "Layers to skip",
            key=LAYERS,
            help=f"Transformer layers 0–{family.transformer_layers - 1} of {family.label}.",
        )
        scale, start, stop = st.columns(3)
        scale.number_input("Scale", 0.0, 10.0, step=0.1, key=SCALE)
        start.number_input("Start", 0.0, 1.0, step=0.01, key=START, help="Share of the steps.")
        stop.number_input("Stop", 0.0, 1.0, step=0.01, key=STOP, help="Share of the steps.")
    state["slg"] = _to_option()
    state[SHOWN] = state["slg"]
    if ERROR in state:
        st.error(state[ERROR])
    elif state[ON] and float(state.get("guidance_scale", 0)) <= 1:
        st.caption("Skip layer guidance runs only with guidance on (above 1): none now.")
