"""The one way the app writes byte counts and durations: "950 kB", "16.3 GB", "7 min"."""

from __future__ import annotations


def human_bytes(n: float, *, whole: bool = False) -> str:
    """Format a byte count the way download dialogs do: 950 kB, 1.2 GB (`whole`: 38 MB).

    Decimal units (1 GB = 10⁹ bytes), one decimal below 100 of a unit, none from 100 on.
    """
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 100 and not whole else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def human_duration(seconds: float) -> str:
    """Format seconds as "45 s", "7 min", "1 h 20 min"."""
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
