"""First paint: `streamlit run` → the generator's Generate button visible in headless Chromium.

Compared with a one-line hello-world app started the same way (same interpreter, flags and
working directory), alternating, median of N each. Target: app / hello ≤ 1.4×. Also reports
whether the server had loaded torch by the time the page was usable (it must not have).

    .venv/bin/python -m bench.first_paint [--runs 5] [--file-watcher auto]

Readiness is checked on every animation frame in the page (see `VISIBLE_JS`). The project
sets `server.fileWatcherType = "poll"`; `--file-watcher auto` measures Streamlit's default.
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

from bench.common import (
    APP_ROOT,
    CHROMIUM_ARGS,
    free_port,
    library_versions,
    machine_facts,
    median,
    spread,
)

HELLO = 'import streamlit as st; st.write("Hello world")\n'

# Checked on every animation frame in the page. Playwright's own `locator.wait_for` polls
# with a backoff (0, 20, 50, 100, 100, then every 500 ms), which rounds anything not ready
# within ~0.27 s of loading up to the next 500-ms tick: it measured its schedule, not the app.
VISIBLE_JS = """([selector, text]) => [...document.querySelectorAll(selector)].some(
    (e) => e.innerText.trim() === text && e.getBoundingClientRect().width > 0)"""


def wait_visible(page, selector: str, text: str) -> None:
    """Return once an element matching `selector` with exactly `text` is laid out."""
    page.wait_for_function(VISIBLE_JS, arg=[selector, text], polling="raf", timeout=120_000)


def _torch_loaded(pid: int) -> bool:
    """Whether the process has torch's shared library mapped (Linux)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_first_paint(
    browser,
    script: Path,
    ready,
    env: dict[str, str],
    flags: tuple[str, ...] = (),
    idle_seconds: float = 0.0,
) -> tuple[float, bool, float | None]:
    """Start `streamlit run script`; return seconds until `ready(page)` passes, torch-ness,
    and (with `idle_seconds`) the server's CPU use, in cores, while the page sits open."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        *(sys.executable, "-m", "streamlit", "run", str(script)),
        *("--server.address", "127.0.0.1", "--server.port", str(port)),
        *("--server.headless", "true", *flags),
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
        torch = _torch_loaded(proc.pid)
        idle_cores = None
        if idle_seconds:
            time.sleep(1.0)  # let the first run's watchers and repairs settle
            before = _cpu_seconds(proc.pid)
            time.sleep(idle_seconds)
            idle_cores = (_cpu_seconds(proc.pid) - before) / idle_seconds
        return seconds, torch, idle_cores
    finally:
        context.close()
        proc.terminate()
        proc.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--file-watcher",
        choices=("auto", "watchdog", "poll", "none"),
        help="override .streamlit/config.toml's server.fileWatcherType for both apps "
        "(auto: Streamlit's default, watchdog where installed)",
    )
    parser.add_argument(
        "--idle", type=float, default=10.0, help="seconds of server CPU to sample, page open"
    )
    args = parser.parse_args()
    flags = ("--server.fileWatcherType", args.file_watcher) if args.file_watcher else ()

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
        wait_visible(page, "p", "Hello world")

    def app_ready(page) -> None:
        wait_visible(page, "button", "Generate")

    print(machine_facts())
    print(library_versions("streamlit", "playwright"), "· chromium", chromium)
    times: dict[str, list[float]] = {"hello": [], "app": []}
    torch_at_paint = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        # One unmeasured start of each warms the OS file cache, as a developer's second run.
        time_first_paint(browser, hello, hello_ready, env, flags)
        time_first_paint(browser, APP_ROOT / "streamlit_app.py", app_ready, env, flags)
        for run in range(args.runs):
            seconds, _, _ = time_first_paint(browser, hello, hello_ready, env, flags)
            times["hello"].append(seconds)
            seconds, torch, _ = time_first_paint(
                browser, APP_ROOT / "streamlit_app.py", app_ready, env, flags
            )
            times["app"].append(seconds)
            torch_at_paint.append(torch)
            print(f"run {run + 1}: hello {times['hello'][-1]:.2f} s · app {seconds:.2f} s")
        idle_cores = None
        if args.idle > 0:
            _, _, idle_cores = time_first_paint(
                browser, APP_ROOT / "streamlit_app.py", app_ready, env, flags, args.idle
            )
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
    print(f"file watcher: {args.file_watcher or 'as in .streamlit/config.toml'}")
    if idle_cores is not None:
        print(f"app server CPU, page open and idle {args.idle:.0f} s: {idle_cores:.1%} of a core")


if __name__ == "__main__":
    main()
