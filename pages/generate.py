"""Generator: type a prompt, pick the settings, get images with the seeds that made them."""

import streamlit as st

from core import form, recent, share
from core.demo import DEMO_LABEL, DEMO_MODEL
from core.generation import BackendState, InvalidRequest, random_seed
from core.grid import GridPlan
from core.memory import DROP_T5_NOTE
from core.usecases import check_allowance, generate_and_keep
from ui import generator, grid, loras, page, styles, workbench
from ui.load import load_with_status, show_cancelled, show_load_error, show_running_load
from ui.results import RESULT_KEY, RUNNING_KEY, LiveProgress, show_result, strip
from ui.text import for_visitor

state = st.session_state


def _generate(start: page.PageStart, *, want_preview: bool) -> None:
    """The Generate click: build the request, run the use case, show what became of it."""
    settings, backend = start.settings, start.backend
    seed = random_seed() if state.randomize_seed else int(state.seed)
    try:
        request = form.build_request(state, seed=seed, family=start.family.id, **workbench.inputs())
    except InvalidRequest as exc:
        st.error(for_visitor(exc, settings=settings))
        return
    from core.history import session_id  # the first generation pays for this import

    live = LiveProgress(backend, preview=want_preview and backend.supports_preview)
    outcome = generate_and_keep(
        request,
        settings=settings,
        visitor=start.visitor,
        backend=backend,
        session_id=session_id(state),
        load=lambda b: load_with_status(b, settings),
        on_start=live.start,
        on_progress=live.update,
        preview=want_preview,
    )
    live.clear()
    if outcome.shown is None:
        if outcome.failed_at == "load":  # the reason and its fix, in plain sight
            show_load_error(outcome.problem, settings)
        else:
            st.error(for_visitor(outcome.problem, settings=settings))
        return
    state[RESULT_KEY] = workbench.with_sources(
        outcome.shown, request=request, record_ids=outcome.record_ids
    )
    recent.add(
        state,
        recent.entry_for(
            outcome.shown,
            request=request,
            thumbnail=outcome.thumbnail,
            record_ids=outcome.record_ids,
        ),
    )
    # Write the seed used back into the Seed field; a widget's value can only change
    # before it is drawn, so hand it over and draw the page again.
    form.hand_over(state, {"seed": outcome.shown.seeds[0], "randomize_seed": state.randomize_seed})
    st.rerun()


def _output(
    start: page.PageStart, *, clicked: bool, want_preview: bool, grid_plan: GridPlan | None
) -> None:
    """The output column: a running load, the last load error, a Stop, or the result (an
    image or an X/Y grid)."""
    backend, settings = start.backend, start.settings
    if not clicked and backend.state is BackendState.LOADING:
        show_running_load(backend)  # a load started earlier (any session) keeps going
    elif not clicked and backend.last_load_error and backend.state is not BackendState.LOADED:
        # The reason and its fix stay in plain sight until a load succeeds.
        show_load_error(f"The model could not be loaded. {backend.last_load_error}", settings)
    elif not clicked:
        show_cancelled(backend)  # a cancelled load: what was kept, what Generate does next
    if RUNNING_KEY in state and not clicked:
        # The last run ended without finishing: Stop (or the app's own stop) interrupted it.
        st.warning(f"Stopped ({state.pop(RUNNING_KEY)}). Nothing was kept; Generate to run again.")
    if clicked:
        grid.forget()  # the new images take the last grid's place
        _generate(start, want_preview=want_preview)
    elif grid_plan is not None:
        grid.run(start, grid_plan, result_key=RESULT_KEY)
    elif grid.shown(settings):  # the last grid, or what a Stop left of it
        pass
    elif RESULT_KEY in state:
        show_result(state[RESULT_KEY], settings, family=start.family, backend=backend)
    else:
        st.caption("Your images appear here.")


start = page.start("Generate")
if start.family_note:  # which model family's rules apply, when they were guessed
    st.info(start.family_note, icon=":material/help:")
if start.settings.model == DEMO_MODEL:
    st.info(
        f"Running the {DEMO_LABEL}. Set SD_MODEL to use SD3.5 Medium.", icon=":material/science:"
    )
loaded = start.backend.loaded_facts
if loaded is not None and loaded.plan is not None and loaded.plan.drop_t5:
    # The memory plan left T5-XXL out to fit.
    st.warning(
        f"Loaded without T5-XXL to fit in memory: {DROP_T5_NOTE}.", icon=":material/content_cut:"
    )

# A shared link (?prompt=…&seed=…) fills the form once; bad values are named and skipped.
for warning in share.take_query(state, st.query_params.to_dict(), family=start.family):
    st.warning(warning)
form.prepare(state, start.family)

# Wide screens: the form on the left, the output on the right, so the preview and the
# result are in view without scrolling. Streamlit stacks columns on narrow screens.
allowance = check_allowance(start.settings, start.visitor)
limit_problem = allowance.problem and for_visitor(allowance.problem, settings=start.settings)
form_column, output_column = st.columns(2, gap="large")
with form_column:
    clicked = generator.prompt_form(problem=limit_problem)
    styles.picker(start.settings, start.visitor)
    if limit_problem is not None:
        st.warning(limit_problem, icon=":material/hourglass:")
    elif allowance.allowance is not None:
        st.caption(allowance.allowance.summary())
    generator.examples()
    workbench.section(start)  # the mode; for Vary / Inpaint / Upscale the image and its controls
    want_preview = generator.settings_widgets(start.settings, start.backend, start.family)
    loras.picker(start.settings, start.backend)
    grid_plan = grid.section(start)

form.remember(state)

with output_column:
    # One slot for the output: a new generation replaces the last result at once, rather
    # than leaving it greyed out below the progress until the run ends.
    output = st.empty()
    strip(start.settings, family=start.family, backend=start.backend)
    with output.container():
        _output(start, clicked=clicked, want_preview=want_preview, grid_plan=grid_plan)
