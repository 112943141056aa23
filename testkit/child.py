"""Run a Python snippet in a fresh process in the app root and read the JSON it reports.

Tests and benchmarks use it where a fresh interpreter matters (no cache, no imported state,
real peak memory). The snippet prints one line `RESULT{json}`; anything else it prints is
passed over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
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
