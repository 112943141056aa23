"""Run by check_light_install.sh inside the light venv: the app works with no torch.

Starts the whole app under AppTest in remote mode, renders every page, generates one
image through the remote backend and checks that torch/diffusers were never imported.
"""

import importlib.util
import logging
import os
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.quiet import DropMessage

ROOT = Path(os.environ["APP_ROOT"])
BLOCKED = ("torch", "diffusers", "transformers")


def main() -> None:
    for module in BLOCKED:
        assert importlib.util.find_spec(module) is None, f"{module} is installed"
    # Sign-in (st.login) needs Authlib: requirements.txt asks for streamlit[auth].
    assert importlib.util.find_spec("authlib") is not None, "Authlib missing: st.login would fail"

    # This check drives the app through AppTest from a plain script ("bare mode"), where
    # AppTest's own set-up makes Streamlit say "missing ScriptRunContext! This warning can
    # be ignored when running in bare mode": drop that one message, nothing else.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        DropMessage("missing ScriptRunContext")
    )
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    for page in ("pages/gallery.py", "pages/hardware.py", "pages/generate.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)

    at.text_area(key="prompt").input("a red fox")
    at.checkbox(key="randomize_seed").uncheck()
    at.number_input(key="seed").set_value(7)
    at.number_input(key="width").set_value(512)
    at.number_input(key="height").set_value(512)
    at.slider(key="steps").set_value(2)
    at.button(key="generate").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    result = at.session_state["last_result"]
    assert result["backend"] == "remote", result["backend"]
    assert result["seeds"] == [7], result["seeds"]
    imported = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not imported, imported
    print(
        f"light install OK: remote image {result['sha256'][0][:12]} "
        f"in {result['generation_seconds']:.1f} s from {result['details']['endpoint']}"
    )


if __name__ == "__main__":
    main()
