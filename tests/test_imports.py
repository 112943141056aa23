"""Drawing a page must not import torch or diffusers: that is what keeps first paint fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import APP_FILE, APP_ROOT

# What `streamlit_app.py` and the pages import at the top, before any generation.
PAGE_IMPORTS = [
    "core.service",
    "core.form",
    "core.generation",
    "core.demo",
    "core.settings",
    "core.recent",
    "core.models",
    "core.modes",
    "core.share",
]
HEAVY = ["torch", "diffusers", "transformers"]


def _heavy_modules_after(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; return the heavy modules it left imported."""
    code += f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=APP_ROOT,
        env=dict(os.environ),  # the autouse fixture has set SD_MODEL=demo and a tmp data dir
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_page_imports_leave_torch_and_diffusers_unloaded():
    """Importing the modules the pages use, in a fresh interpreter, loads no torch/diffusers."""
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in PAGE_IMPORTS)
    assert _heavy_modules_after(code) == []


def test_first_render_of_the_app_leaves_torch_and_diffusers_unloaded():
    """Running the whole app once (sidebar and generator page) imports no torch/diffusers."""
    code = (
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({APP_FILE!r}, default_timeout=60)\n"
        "at.run()\n"
        "assert not at.exception, at.exception\n"
        "assert at.button(key='generate')\n"
    )
    assert _heavy_modules_after(code) == []


def test_the_check_sees_torch_once_imported():
    """The same check reports torch after a call that needs it (so the tests above can fail)."""
    code = "import core.device\ncore.device.choose_device('auto', 'auto')\n"
    assert "torch" in _heavy_modules_after(code)


def test_the_project_config_keeps_watchdog_off_the_repository():
    """`.streamlit/config.toml` makes `streamlit run` poll the app's files instead of watchdog.

    watchdog watches the entry script's folder recursively, `.venv` included: that cost
    ~0.45 s of first paint and a busy core while a page sat open (docs/benchmarks.md).
    """
    code = (
        "from streamlit import config\n"
        "config.get_config_options(force_reparse=True)\n"
        "from streamlit.watcher.path_watcher import get_default_path_watcher_class\n"
        "print(get_default_path_watcher_class().__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=APP_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["PollingPathWatcher"]
