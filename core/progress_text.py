"""The words on the progress display, one label per phase of a generation."""

from __future__ import annotations

from core.compile import FIRST_IMAGE_LABEL
from core.generation import Progress


def progress_text(p: Progress) -> str:
    """The label of the progress display for each phase of a generation."""
    image = f"Image {p.image_index + 1}/{p.num_images} · " if p.num_images > 1 else ""
    if p.phase == "requesting":  # a remote call: no steps to count, so a spinner and time
        spinner = "◐◓◑◒"[int(p.elapsed * 4) % 4]
        return f"{spinner} {image}Waiting for the remote service · {p.elapsed:.0f} s"
    if p.phase == "waiting":
        return f"⏳ {image}{p.detail or 'Service busy'} · retrying in {p.retry_in:.0f} s"
    if p.phase == "queued":
        ahead = "1 generation" if p.queue_position == 1 else f"{p.queue_position} generations"
        return f"Waiting for the model: {ahead} ahead of you · {p.elapsed:.0f} s"
    if p.phase == "encoding":
        return f"Encoding the prompt · {p.elapsed:.0f} s"
    if p.phase == "compiling":  # the first step of an image that compiles (detail: why)
        return f"{image}{(p.detail or FIRST_IMAGE_LABEL).capitalize()} · {p.elapsed:.0f} s"
    if p.phase == "decoding":
        tiles = f" in {p.tiles} tiles" if p.tiles else ""
        return f"{image}Decoding the image{tiles} · {p.elapsed:.0f} s"
    if p.phase == "saving":
        return "Saving to the seed history…"
    eta = f" · ETA {p.eta:.0f} s" if p.eta is not None else ""
    return f"{image}step {p.step}/{p.total_steps}{eta}"
