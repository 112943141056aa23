"""Generator: type a prompt, pick the settings, get images with the seeds that made them."""

import logging

import streamlit as st

from core import form, share
from core.access import daily_allowance, require_visitor
from core.demo import DEMO_LABEL, DEMO_MODEL
from core.device import DeviceError
from core.estimate import DRAFT, describe_estimate, estimate_for
from core.generation import (
    MAX_GUIDANCE,
    MAX_IMAGE_SIZE,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    MIN_IMAGE_SIZE,
    SIZE_MULTIPLE,
    GenerationError,
    InvalidRequest,
    Progress,
    random_seed,
)
from core.memory import DROP_T5_NOTE
from core.progress_text import progress_text as _progress_text
from core.safe_text import for_visitor, plural
from core.service import (
    current_settings,
    get_backend,
    load_with_status,
    refresh_sidebar,
    show_running_load,
)
from core.settings import SettingsError

log = logging.getLogger(__name__)
state = st.session_state
RESULT_KEY = "last_result"
RUNNING_KEY = "generation_running"


def _use_example(prompt: str) -> None:
    state.prompt = prompt


def _apply_aspect() -> None:
    ratio = state.get("aspect")
    if ratio:
        state.width, state.height = form.aspect_size(ratio)


def _use_draft() -> None:
    state.width, state.height, state.steps = DRAFT["width"], DRAFT["height"], DRAFT["steps"]
    state.aspect = None


def _estimate(backend) -> None:
    """Before the click: how long this will take here, and a draft preset when it is long."""
    estimate = estimate_for(
        backend,
        settings,
        width=int(state.width),
        height=int(state.height),
        steps=int(state.steps),
        images=int(state.num_images),
    )
    if estimate is None:
        return
    text = describe_estimate(
        estimate, width=int(state.width), height=int(state.height), steps=int(state.steps)
    )
    if int(state.num_images) > 1:
        text += f" for {int(state.num_images)} images"
    if not estimate.worth_a_draft:
        st.caption(text)
        return
    note, button = st.columns([3, 1], vertical_alignment="center")
    note.info(text, icon=":material/timer:")
    button.button(
        f"Draft: {DRAFT['width']}², {DRAFT['steps']} steps",
        key="draft_preset",
        on_click=_use_draft,
        help="A quick look first; raise size and steps once the seed looks right.",
    )


def _wait_for_model(backend) -> float | None:
    """Load the model on first use; return the seconds spent, or None when it failed."""
    if backend.state == "loaded":
        return 0.0
    return load_with_status(backend)


def _generate(backend) -> None:
    seed = random_seed() if state.randomize_seed else int(state.seed)
    try:
        request = form.build_request(state, seed=seed)
    except InvalidRequest as exc:
        st.error(for_visitor(exc, settings=settings))
        return
    # Counted again at the click: another tab or replica may have spent the allowance.
    allowance, problem = daily_allowance(settings, visitor, wanted=request.num_images)
    if problem is not None:
        st.error(problem)
        return
    load_seconds = _wait_for_model(backend)
    if load_seconds is None:
        return
    # Clicking Stop reruns the script; Streamlit then raises inside the next progress
    # update, which ends the pipeline call within one step (the lock is freed in finally).
    st.button("Stop", key="stop", icon=":material/stop_circle:")
    bar = st.progress(0.0, text="Queued…")

    def on_progress(p: Progress) -> None:
        state[RUNNING_KEY] = _progress_text(p)
        bar.progress(p.fraction, text=state[RUNNING_KEY])
        refresh_sidebar(backend, f"generating · {state[RUNNING_KEY]}")

    state[RUNNING_KEY] = "before the first step"
    try:
        result = backend.generate(request, on_progress=on_progress, user=visitor.id)
    except (GenerationError, DeviceError) as exc:
        # Refused or failed with a message (a full queue, an admin's cancel…): not a Stop.
        bar.empty()
        state.pop(RUNNING_KEY, None)
        st.error(for_visitor(exc, settings=settings))
        return
    on_progress(Progress("saving", 0.0))
    state.pop(RUNNING_KEY, None)
    from core import history  # the first generation pays for this import, not the first paint

    # Keep every image in the seed history. A storage fault must not lose the result:
    # each image still gets a PNG carrying its settings, and the page says what was kept.
    kept = history.keep_result(
        result,
        backend=backend,
        target=settings,
        session_id=history.session_id(state),
        owner=visitor.id,
    )
    bar.empty()
    state[RESULT_KEY] = {
        "pngs": kept.pngs,
        "sha256": [history.pixel_sha256(image) for image in result.images],
        "seeds": list(result.seeds),
        "prompt": request.prompt,
        "size": f"{request.width}×{request.height}",
        "steps": request.num_inference_steps,
        "guidance": request.guidance_scale,
        "load_seconds": load_seconds + result.load_seconds,
        "queue_seconds": result.queue_seconds,
        "generation_seconds": result.generation_seconds,
        "history_error": kept.error and for_visitor(kept.error, settings=settings),
        "backend": result.backend,
        "details": dict(result.details),
    }
    # Write the seed used back into the Seed field; a widget's value can only change
    # before it is drawn, so hand it over and draw the page again.
    form.hand_over(state, {"seed": result.seeds[0], "randomize_seed": state.randomize_seed})
    st.rerun()


def _show_result(result: dict) -> None:
    seeds = ", ".join(str(s) for s in result["seeds"])
    timing = f"{result['generation_seconds']:.1f} s"
    if result["load_seconds"] >= 0.05:
        timing += f" + model load {result['load_seconds']:.1f} s"
    if result["queue_seconds"] >= 0.5:
        timing += f" + waited {result['queue_seconds']:.0f} s"
    st.success(f"Seed {seeds} · {result['size']} · {plural(result['steps'], 'step')} · {timing}")
    if result.get("history_error"):
        st.warning(result["history_error"], icon=":material/save:")
    columns = st.columns(min(len(result["pngs"]), 2))
    for i, (png, seed) in enumerate(zip(result["pngs"], result["seeds"], strict=True)):
        with columns[i % len(columns)]:
            st.image(png, caption=f"Seed {seed}")
            st.download_button(
                "Download PNG",
                data=png,
                file_name=f"sd35-{seed}.png",
                mime="image/png",
                key=f"download_{i}",
            )


visitor = require_visitor()
st.title("Generate")
try:
    settings = current_settings()
    backend = get_backend(settings)
except SettingsError as exc:
    st.error(for_visitor(exc))
    st.stop()
if settings.model == DEMO_MODEL:
    st.info(
        f"Running the {DEMO_LABEL}. Set SD_MODEL to use SD3.5 Medium.", icon=":material/science:"
    )
plan = getattr(getattr(backend, "loaded", None), "plan", None)
if plan is not None and plan.drop_t5:  # the memory plan left T5-XXL out to fit
    st.warning(
        f"Loaded without T5-XXL to fit in memory: {DROP_T5_NOTE}.", icon=":material/content_cut:"
    )

# A shared link (?prompt=…&seed=…) fills the form once; bad values are named and skipped.
for warning in share.take_query(state, st.query_params.to_dict()):
    st.warning(warning)
form.prepare(state)

with st.container(border=True):
    st.text_area(
        "Prompt",
        key="prompt",
        height=100,
        placeholder="Describe the image…",
        max_chars=MAX_PROMPT_CHARS,
    )
    examples = st.columns(len(form.EXAMPLE_PROMPTS))
    for i, (column, example) in enumerate(zip(examples, form.EXAMPLE_PROMPTS, strict=True)):
        column.button(
            example, key=f"example_{i}", on_click=_use_example, args=(example,), type="tertiary"
        )
    st.text_area("Negative prompt", key="negative_prompt", height=68, max_chars=MAX_PROMPT_CHARS)

left, right = st.columns(2)
with left:
    st.segmented_control("Aspect ratio", form.ASPECT_RATIOS, key="aspect", on_change=_apply_aspect)
    w, h = st.columns(2)
    size_help = f"{MIN_IMAGE_SIZE}–{MAX_IMAGE_SIZE}, a multiple of {SIZE_MULTIPLE}"
    w.number_input(
        "Width", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, step=SIZE_MULTIPLE, key="width", help=size_help
    )
    h.number_input(
        "Height", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, step=SIZE_MULTIPLE, key="height", help=size_help
    )
    s, r = st.columns([3, 2], vertical_alignment="bottom")
    s.number_input("Seed", 0, MAX_SEED, step=1, key="seed")
    r.checkbox("Randomize seed", key="randomize_seed")
with right:
    st.slider("Guidance scale", 0.0, MAX_GUIDANCE, step=0.5, key="guidance_scale")
    st.slider("Steps", 1, MAX_STEPS, key="steps")
    st.slider("Images", 1, MAX_IMAGES, key="num_images", help="Seeds seed, seed+1, …")

form.remember(state)
_estimate(backend)
allowance, limit_problem = daily_allowance(settings, visitor)
clicked = st.button(
    "Generate",
    type="primary",
    key="generate",
    width="stretch",
    disabled=limit_problem is not None,
    help=limit_problem,
)
if limit_problem is not None:
    st.warning(limit_problem, icon=":material/hourglass:")
elif allowance is not None:
    st.caption(allowance.summary())

if not clicked and getattr(backend, "state", "") == "loading":
    show_running_load(backend)  # a load started earlier (any session) keeps going
elif not clicked and getattr(backend, "last_load_error", None) and backend.state == "not loaded":
    # The reason and its fix stay in plain sight until a load succeeds (not in a closed box).
    message = f"The model could not be loaded. {backend.last_load_error}"
    st.error(for_visitor(message, settings=settings), icon=":material/error:")

if RUNNING_KEY in state and not clicked:
    # The last run ended without finishing: Stop (or the app's own stop) interrupted it.
    st.warning(f"Stopped ({state.pop(RUNNING_KEY)}). Nothing was kept; Generate to run again.")
if clicked:
    _generate(backend)
elif RESULT_KEY in state:
    _show_result(state[RESULT_KEY])
