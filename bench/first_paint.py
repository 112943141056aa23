"""First paint: `streamlit run` → the generator's Generate button visible in headless Chromium.

Compared with a one-line hello-world app started the same way (same interpreter, flags and
working directory), alternating, median of N each. Target: app / hello ≤ 1.4×. Also reports
whether the server had loaded torch by the time the page was usable (it must not have).

    .venv/bin/python -m bench.first_paint [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import APP_ROOT, free_port, library_versions, machine_facts, median, spread

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HELLO = 'import streamlit as st; st.write("Hello world")\n'


def _torch_loaded(pid: int) -> bool:
    """Whether the process has torch's shared library mapped (Linux)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def time_first_paint(browser, script: Path, ready, env: dict[str, str]) -> tuple[float, bool]:
    """Start `streamlit run script`; return seconds until `ready(page)` passes, and torch-ness."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        *(sys.executable, "-m", "streamlit", "run", str(script)),
        *("--server.address", "127.0.0.1", "--server.port", str(port)),
        *("--server.headless", "true"),
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=APP_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    context = browser.new_context()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{script.name}: streamlit exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.02)
        page = context.new_page()
        page.goto(url)
        ready(page)
        seconds = time.perf_counter() - start
        return seconds, _torch_loaded(proc.pid)
    finally:
        context.close()
        proc.terminate()
        proc.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("needs Debian chromium: apt-get install chromium")
    workdir = Path(tempfile.mkdtemp(prefix="first-paint-"))
    hello = workdir / "hello.py"
    hello.write_text(HELLO)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SD_", "HF_"))}
    env.update(SD_MODEL="demo", SD_DATA_DIR=str(workdir / "data"), HF_HUB_OFFLINE="1")

    def hello_ready(page) -> None:
        page.get_by_text("Hello world").wait_for(timeout=120_000)

    def app_ready(page) -> None:
        page.get_by_role("button", name="Generate").wait_for(timeout=120_000)

    print(machine_facts())
    print(library_versions("streamlit", "playwright"), "· chromium", chromium)
    times: dict[str, list[float]] = {"hello": [], "app": []}
    torch_at_paint = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        # One unmeasured start of each warms the OS file cache, as a developer's second run.
        time_first_paint(browser, hello, hello_ready, env)
        time_first_paint(browser, APP_ROOT / "streamlit_app.py", app_ready, env)
        for run in range(args.runs):
            seconds, _ = time_first_paint(browser, hello, hello_ready, env)
            times["hello"].append(seconds)
            seconds, torch = time_first_paint(
                browser, APP_ROOT / "streamlit_app.py", app_ready, env
            )
            times["app"].append(seconds)
            torch_at_paint.append(torch)
            print(f"run {run + 1}: hello {times['hello'][-1]:.2f} s · app {seconds:.2f} s")
        browser.close()
    shutil.rmtree(workdir, ignore_errors=True)

    ratio = median(times["app"]) / median(times["hello"])
    print()
    print("| app | first paint, median of", args.runs, "(min–max) |")
    print("| --- | --- |")
    print(f"| hello world (one line) | {spread(times['hello'])} |")
    print(f"| generator page (SD_MODEL=demo) | {spread(times['app'])} |")
    print(f"ratio app / hello: {ratio:.2f}× (target ≤ 1.4×)")
    print(f"torch loaded in the server at first paint: {any(torch_at_paint)}")


if __name__ == "__main__":
    main()
