"""The Generate page's form: prompts and Generate, examples, size, seed, guidance, steps,
the live preview toggle and the time estimate.

The values live in `st.session_state` under the keys `core.form` names; `core.form`
keeps them across page changes and applies values handed over by other pages.
"""

from __future__ import annotations

import streamlit as st

from core import form
from core.estimate import describe_estimate, draft_for, estimate_for
from core.generation import (
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    Backend,
)
from core.models import Family
from core.modes import DEFAULT_MODE, get_mode
from core.safe_text import plural
from core.settings import Settings
from ui import slg, workbench

PREVIEW_KEY = "live_preview"  # the toggle; its value is kept under PREVIEW_CHOICE across pages
PREVIEW_CHOICE = "live_preview_choice"
NO_REMOTE_PREVIEW = "No live preview with a remote service: it sends only the finished image."


def _use_example(prompt: str) -> None:
    st.session_state.prompt = prompt


def _apply_aspect(family: Family) -> None:
    state = st.session_state
    ratio = state.get("aspect")
    if ratio:
        state.width, state.height = form.aspect_size(ratio, family)


def _use_draft(draft: dict[str, int]) -> None:
    state = st.session_state
    state.width, state.height, state.steps = draft["width"], draft["height"], draft["steps"]
    state.aspect = None


def prompt_form(*, problem: str | None) -> bool:
    """The two prompts and Generate (disabled with `problem` as its help); True when clicked.

    Ctrl+Enter in a prompt box clicks Generate (the button's keyboard shortcut), with the
    text as typed. Not a form: a form would hold the typed prompt back until it is
    submitted, so the other buttons that use it (Generate grid, the styles' Apply and
    Save) would see the prompt as it was before.
    """
    st.text_area(
        "Prompt",
        key="prompt",
        height=100,
        placeholder="Describe the image…",
        max_chars=MAX_PROMPT_CHARS,
        help="Ctrl+Enter (⌘+Enter) generates.",
    )
    st.text_area("Negative prompt", key="negative_prompt", height=68, max_chars=MAX_PROMPT_CHARS)
    return st.button(
        "Generate",
        type="primary",
        key="generate",
        width="stretch",
        disabled=problem is not None,
        help=problem,
        shortcut="ctrl+enter",
    )


EXAMPLE_LABEL_CHARS = 22  # a label this long fits three to a row in the form column


# Short names for the examples in core.form (a click still puts the whole prompt in).
EXAMPLE_LABELS = {
    form.EXAMPLE_PROMPTS[0]: "Capybara in a suit",
    form.EXAMPLE_PROMPTS[1]: "Lighthouse at dusk",
    form.EXAMPLE_PROMPTS[2]: "Dewy spider web",
}


def example_label(example: str, limit: int = EXAMPLE_LABEL_CHARS) -> str:
    """The example's short name, else its first words cut between words (never inside
    one), with "…" when cut."""
    if example in EXAMPLE_LABELS:
        return EXAMPLE_LABELS[example]
    if len(example) <= limit:
        return example
    words = example[: limit + 1].rsplit(" ", 1)[0].rstrip(" ,")
    return words + "…"


def examples() -> None:
    """One button per example prompt, as wide as its label (its first words; the whole
    prompt in its tooltip); a click puts it in the Prompt box."""
    with st.container(horizontal=True, gap="small"):
        for i, example in enumerate(form.EXAMPLE_PROMPTS):
            st.button(
                example_label(example),
                key=f"example_{i}",
                help=example,
                on_click=_use_example,
                args=(example,),
                type="tertiary",
                width="content",
            )


def settings_widgets(settings: Settings, backend: Backend, family: Family) -> bool:
    """Aspect, size (the family's rules), seed, guidance, steps, images, skip-layer
    guidance, live preview and the estimate under them; return whether the live preview is
    wanted. A mode that works on an image takes its size from the image."""
    from_image = get_mode(st.session_state.get("mode", DEFAULT_MODE.id)).needs_source
    st.segmented_control(
        "Aspect ratio",
        form.ASPECT_RATIOS,
        key="aspect",
        on_change=_apply_aspect,
        args=(family,),
        disabled=from_image,
    )
    sizes, size_help = family.sizes, family.sizes.describe()
    if from_image:
        size_help = "The size comes from the image worked on."
    # The seed box holds a 10-digit seed (MAX_SEED) with room to spare; Randomize below it.
    w, h, s = st.columns([1, 1, 2], vertical_alignment="top")
    for column, label, key in ((w, "Width", "width"), (h, "Height", "height")):
        column.number_input(
            label,
            sizes.min,
            sizes.max,
            step=sizes.multiple,
            key=key,
            help=size_help,
            disabled=from_image,
        )
    s.number_input("Seed", 0, MAX_SEED, step=1, key="seed")
    s.checkbox("Randomize seed", key="randomize_seed")
    left, right = st.columns(2)
    left.slider("Guidance scale", 0.0, MAX_GUIDANCE, step=0.5, key="guidance_scale")
    right.slider("Steps", 1, MAX_STEPS, key="steps")
    left.slider("Images", 1, MAX_IMAGES, key="num_images", help="Seeds seed, seed+1, …")
    with right:
        want_preview = preview_toggle(settings, remote=not backend.supports_preview)
    slg.controls(family, remote=settings.backend == "remote")
    estimate(settings, backend, family)
    return want_preview


def preview_toggle(settings: Settings, *, remote: bool) -> bool:
    """The Live preview toggle; its choice survives page changes. Remote: off by default."""
    state = st.session_state
    state.setdefault(PREVIEW_CHOICE, settings.preview and not remote)
    if PREVIEW_KEY not in state:  # Streamlit dropped the widget's value on a page change
        state[PREVIEW_KEY] = state[PREVIEW_CHOICE]
    st.toggle(
        "Live preview",
        key=PREVIEW_KEY,
        help="Show the image forming while it denoises (a quick approximation).",
        on_change=lambda: state.__setitem__(PREVIEW_CHOICE, state[PREVIEW_KEY]),
    )
    if remote and state[PREVIEW_KEY]:  # said only to someone who asked for it
        st.caption(NO_REMOTE_PREVIEW)
    return bool(state[PREVIEW_KEY])


def estimate(settings: Settings, backend: Backend, family: Family) -> None:
    """Before the click: how long this will take here, and a draft preset when it is long.

    It counts the steps that really run (Vary at strength 0.6 runs 24 of 40) at the size
    that will be made (an image's, for the modes that work on one)."""
    state = st.session_state
    width, height, steps = workbench.planned(family)
    images = int(state.num_images)
    found = estimate_for(backend, settings, width=width, height=height, steps=steps, images=images)
    if found is None:
        return
    text = describe_estimate(found, width=width, height=height, steps=steps)
    if images > 1:
        text += f" for {images} images"
    if not found.worth_a_draft:
        st.caption(text)
        return
    # The button under the note, not beside it: in the form's column a quarter of its width
    # cut the label to "Draft: 5…".
    st.info(text, icon=":material/timer:")
    draft = draft_for(family)
    st.button(
        f"Draft: {draft['width']}², {plural(draft['steps'], 'step')}",
        key="draft_preset",
        on_click=_use_draft,
        args=(draft,),
        help="A quick look first; raise size and steps once the seed looks right.",
    )
