"""What a click does, as plain functions the pages call and whose typed results they draw.

- `check_allowance` — may this visitor make `wanted` more images today (SD_DAILY_LIMIT)?
- `hold_allowance` — hold an accepted request's places under the limit while it runs
  (every use case that makes images runs inside one; see its docstring);
- `load_model` — load the model (or join the load that runs), watching it as it goes;
- `generate_and_keep` — the Generate click: hold the allowance, load, generate, keep;
- `regenerate_and_verify` — the gallery's Regenerate & verify: validity, allowance, load,
  setup differences, regenerate and compare, counted against the limit;
- `plan_from_form`, `generate_grid_and_keep`, `redraw_grid` — the X/Y grid: check it,
  run it keeping every cell (the daily limit's places held for all cells up front), and
  draw a stored one again.

Arguments are typed (settings, visitor, backend, store, callbacks); results are frozen
dataclasses. Messages in them are our own words with outside values already quoted, but
server paths still in: the ui passes them through `ui.text.for_visitor` when it draws them.
Nothing here imports Streamlit, torch or the history store at import time.
"""

from core.usecases.allowance import AllowanceCheck, Hold, check_allowance, hold_allowance
from core.usecases.generate import Generated, GenerateOutcome, generate_and_keep
from core.usecases.grid import (
    GridCellShown,
    GridMade,
    GridOutcome,
    GridPicture,
    PlannedGrid,
    generate_grid_and_keep,
    plan_from_form,
    redraw_grid,
)
from core.usecases.load import LoadOutcome, load_model
from core.usecases.verify import VerifyOutcome, regenerate_and_verify

__all__ = [
    "AllowanceCheck",
    "GenerateOutcome",
    "Generated",
    "Hold",
    "GridCellShown",
    "GridMade",
    "GridOutcome",
    "GridPicture",
    "LoadOutcome",
    "PlannedGrid",
    "VerifyOutcome",
    "check_allowance",
    "generate_and_keep",
    "hold_allowance",
    "generate_grid_and_keep",
    "load_model",
    "plan_from_form",
    "redraw_grid",
    "regenerate_and_verify",
]
