"""Generator: type a prompt, pick the settings, get images with the seeds that made them."""

import logging

import streamlit as st

from core import form, recent, share
from core.access import daily_allowance, require_visitor
from core.demo import DEMO_LABEL, DEMO_MODEL
from core.device import DeviceError
from core.estimate import DRAFT, describe_estimate, estimate_for
from core.generation import (
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    GenerationError,
    InvalidRequest,
    Progress,
    random_seed,
)
from core.memory import DROP_T5_NOTE
from core.models import family_for
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
PREVIEW_KEY = "live_preview"  # the toggle; its value is kept under PREVIEW_CHOICE across pages
PREVIEW_CHOICE = "live_preview_choice"
NO_REMOTE_PREVIEW = "No live preview with a remote service: it sends only the finished image."


def _use_example(prompt: str) -> None:
    state.prompt = prompt


def _apply_aspect() -> None:
    ratio = state.get("aspect")
    if ratio:
        state.width, state.height = form.aspect_size(ratio, family)


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


def _generate(backend, *, want_preview: bool) -> None:
    seed = random_seed() if state.randomize_seed else int(state.seed)
    try:
        request = form.build_request(state, seed=seed, family=family.id)
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
    preview = want_preview and getattr(backend, "supports_preview", False)
    preview_slot = st.empty()
    if preview:  # remote mode: the note under the toggle says why there is none
        preview_slot.caption("The preview appears from step 2.")

    def on_progress(p: Progress) -> None:
        state[RUNNING_KEY] = _progress_text(p)
        bar.progress(p.fraction, text=state[RUNNING_KEY])
        refresh_sidebar(backend, f"generating · {state[RUNNING_KEY]}")
        if p.preview is not None:
            image = f"image {p.image_index + 1}/{p.num_images} · " if p.num_images > 1 else ""
            preview_slot.image(
                p.preview,
                caption=f"Preview · {image}step {p.step}/{p.total_steps}",
                width="stretch",
            )

    state[RUNNING_KEY] = "before the first step"
    try:
        options = {"preview": True} if preview else {}
        result = backend.generate(request, on_progress=on_progress, user=visitor.id, **options)
    except (GenerationError, DeviceError) as exc:
        # Refused or failed with a message (a full queue, an admin's cancel…): not a Stop.
        bar.empty()
        preview_slot.empty()
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
    preview_slot.empty()
    shown = {
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
    state[RESULT_KEY] = shown
    recent.add(
        state,
        recent.entry_for(
            shown,
            request=request,
            thumbnail=history.encode_thumbnail(result.images[0]),
            record_ids=[record.id for record in kept.records],
        ),
    )
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
    if result.get("recalled"):  # shown again from the strip: its settings, as plain text
        values = result["form_values"]
        st.caption("Shown again from this session")
        st.text(
            f"{values['prompt'] or '(no prompt)'}\n"
            f"Guidance {values['guidance_scale']:g} · {plural(values['num_images'], 'image')}"
        )
        st.button(
            "Use these settings",
            key="recent_use",
            type="primary",
            on_click=form.hand_over,
            args=(state, values),
        )
    downloadable = result.get("downloadable") or [True] * len(result["pngs"])
    columns = st.columns(min(len(result["pngs"]), 2))
    for i, (png, seed) in enumerate(zip(result["pngs"], result["seeds"], strict=True)):
        with columns[i % len(columns)]:
            st.image(png, caption=f"Seed {seed}", width="stretch")
            if downloadable[i]:
                st.download_button(
                    "Download PNG",
                    data=png,
                    file_name=f"sd35-{seed}.png",
                    mime="image/png",
                    key=f"download_{i}",
                )
            else:
                st.caption("No longer in the seed history: nothing to download.")


def _show_again(entry_id: str) -> None:
    """Strip click: show that result again, its PNGs read back from the seed history."""
    from core import history

    entry = recent.find(state, entry_id)
    if entry is None:
        return

    def load_png(record_id: str) -> bytes | None:
        """The stored PNG while its record is live (a deleted one is not shown again)."""
        try:
            store = history.open_store(settings)
            return store.png_bytes(record_id) if store.get(record_id) is not None else None
        except history.HistoryError:
            return None

    state[RESULT_KEY] = recent.recall(
        entry, load_png=load_png, missing=lambda: history.placeholder_image(512, "image deleted")
    )


def _strip() -> None:
    """This session's recent results as thumbnails; a click shows one again."""
    entries = recent.entries(state)
    if not entries:
        return
    st.caption("This session")
    shown = state.get(RESULT_KEY, {}).get("recalled")
    columns = st.columns(recent.LIMIT // 2)
    for i, entry in enumerate(entries):
        with columns[i % len(columns)]:
            st.image(entry.thumbnail, width="stretch")
            st.button(
                entry.label,
                key=f"recent_{entry.id}",
                on_click=_show_again,
                args=(entry.id,),
                type="secondary" if entry.id == shown else "tertiary",
                width="stretch",
            )


def _preview_toggle(*, remote: bool) -> bool:
    """The Live preview toggle; its choice survives page changes. Remote: off by default."""
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


visitor = require_visitor()
st.title("Generate")
try:
    settings = current_settings()
    backend = get_backend(settings)
except SettingsError as exc:
    st.error(for_visitor(exc))
    st.stop()
resolution = family_for(settings)  # the model family: its sizes and defaults, its note
family = resolution.family
if resolution.note:
    st.info(resolution.note, icon=":material/help:")
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
for warning in share.take_query(state, st.query_params.to_dict(), family=family):
    st.warning(warning)
form.prepare(state, family)

# Wide screens: the form on the left, the output on the right, so the preview and the
# result are in view without scrolling. Streamlit stacks columns on narrow screens.
allowance, limit_problem = daily_allowance(settings, visitor)
form_column, output_column = st.columns(2, gap="large")
with form_column:
    # A form so that Ctrl+Enter in the prompt submits it, i.e. clicks Generate (Streamlit's
    # own binding for text areas in forms). Only the two prompts live in it: widgets with
    # callbacks (examples, aspect presets) cannot be inside a form.
    with st.form("prompt_form", enter_to_submit=True):
        st.text_area(
            "Prompt",
            key="prompt",
            height=100,
            placeholder="Describe the image…",
            max_chars=MAX_PROMPT_CHARS,
            help="Ctrl+Enter (⌘+Enter) generates.",
        )
        st.text_area(
            "Negative prompt", key="negative_prompt", height=68, max_chars=MAX_PROMPT_CHARS
        )
        clicked = st.form_submit_button(
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
    examples = st.columns(len(form.EXAMPLE_PROMPTS))
    for i, (column, example) in enumerate(zip(examples, form.EXAMPLE_PROMPTS, strict=True)):
        column.button(
            example, key=f"example_{i}", on_click=_use_example, args=(example,), type="tertiary"
        )

    st.segmented_control("Aspect ratio", form.ASPECT_RATIOS, key="aspect", on_change=_apply_aspect)
    sizes, size_help = family.sizes, family.sizes.describe()
    w, h, s, r = st.columns([2, 2, 2.4, 3.6], vertical_alignment="bottom")
    w.number_input("Width", sizes.min, sizes.max, step=sizes.multiple, key="width", help=size_help)
    h.number_input(
        "Height", sizes.min, sizes.max, step=sizes.multiple, key="height", help=size_help
    )
    s.number_input("Seed", 0, MAX_SEED, step=1, key="seed")
    r.checkbox("Randomize seed", key="randomize_seed")
    left, right = st.columns(2)
    left.slider("Guidance scale", 0.0, MAX_GUIDANCE, step=0.5, key="guidance_scale")
    right.slider("Steps", 1, MAX_STEPS, key="steps")
    left.slider("Images", 1, MAX_IMAGES, key="num_images", help="Seeds seed, seed+1, …")
    with right:
        want_preview = _preview_toggle(remote=not getattr(backend, "supports_preview", False))
    _estimate(backend)

form.remember(state)

with output_column:
    # One slot for the output: a new generation replaces the last result at once, rather
    # than leaving it greyed out below the progress until the run ends.
    output = st.empty()
    _strip()
    with output.container():
        if not clicked and getattr(backend, "state", "") == "loading":
            show_running_load(backend)  # a load started earlier (any session) keeps going
        elif not clicked and getattr(backend, "last_load_error", None) and not backend.loaded:
            # The reason and its fix stay in plain sight until a load succeeds.
            message = f"The model could not be loaded. {backend.last_load_error}"
            st.error(for_visitor(message, settings=settings), icon=":material/error:")
        if RUNNING_KEY in state and not clicked:
            # The last run ended without finishing: Stop (or the app's own stop) interrupted it.
            st.warning(
                f"Stopped ({state.pop(RUNNING_KEY)}). Nothing was kept; Generate to run again."
            )
        if clicked:
            _generate(backend, want_preview=want_preview)
        elif RESULT_KEY in state:
            _show_result(state[RESULT_KEY])
        else:
            st.caption("Your images appear here.")
