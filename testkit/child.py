"""Child processes of tests and benchmarks: run a Python snippet in a fresh process in the
app root and read the JSON it reports (`run_child`), and the worker side of a race across
processes (`race_threads`).

A fresh interpreter is what some checks need (no cache, no imported state, real peak
memory). The snippet prints one line `RESULT{json}`; anything else it prints is passed over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

APP_ROOT = Path(__file__).resolve().parent.parent
RESULT = "RESULT"


def reported(stdout: str) -> Any | None:
    """The JSON after the first `RESULT` line of `stdout`, or None when there is none."""
    line = next((x for x in stdout.splitlines() if x.startswith(RESULT)), None)
    return None if line is None else json.loads(line[len(RESULT) :])


def run_child(
    code: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> Any:
    """Run `code` with `args` as argv[1:] (in the app root, with `env` or this process's
    environment); return what it reported. Raise RuntimeError with the end of its stderr
    when it reported nothing."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=APP_ROOT,
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = reported(proc.stdout)
    if result is None:
        raise RuntimeError(proc.stderr[-3000:])
    return result


def race_threads(target: Callable[[int], str], threads: int) -> None:
    """The worker side of a race across processes: `threads` threads each call `target(n)`
    at the same moment (a barrier). Print "ready", wait for a line on stdin (the test
    releases every worker process at once), run them, then print the line each returned."""
    barrier = threading.Barrier(threads)
    lines: list[str] = []

    def run(n: int) -> None:
        barrier.wait()
        lines.append(target(n))

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    print("ready", flush=True)
    sys.stdin.readline()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print("\n".join(lines), flush=True)
