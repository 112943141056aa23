"""Small helpers the benchmarks (and the browser test) share: machine facts, medians, a free
loopback port, the headless Chromium flags."""

from __future__ import annotations

import datetime
import os
import platform
import socket
import statistics
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parent.parent

# Debian's chromium, driven by Playwright: bench/first_paint.py and tests/test_e2e_browser.py.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def machine_facts() -> str:
    """One line: date, CPU model and cores, RAM, Python and the library versions that matter."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        ram = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        ram = "RAM unknown"
    load = ""
    if hasattr(os, "getloadavg"):
        load = f" · load avg {os.getloadavg()[0]:.1f}"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{date} · {cpu} · {os.cpu_count()} cores · {ram} · {platform.system()} · "
        f"Python {platform.python_version()}{load}"
    )


def library_versions(*names: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in names:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return " · ".join(parts)


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """`median (min–max)` in seconds, for the printed tables."""
    return f"{median(values):.3f} s ({min(values):.3f}–{max(values):.3f})"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The SD3.5 Medium VAE's config (its vae/config.json), built with random weights: no download.
SD35_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=1.5305,
    shift_factor=0.0609,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
