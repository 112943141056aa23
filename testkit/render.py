"""Raw pixels of one small image from a pipeline (64², 2 steps, CFG on, a CPU generator).

Fast on the tiny pipeline and exact to the bit: `tests/test_lora.py` and `bench/grid_lora.py`
compare these bytes before, with and after a LoRA to tell whether its weights acted.
"""

from __future__ import annotations

from typing import Any


def raw_pixels(pipe: Any, prompt: str = "a fox", seed: int = 5) -> bytes:
    """The image's float pixels as bytes (`output_type="np"`: no rounding to 8 bits)."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.inference_mode():
        out = pipe(
            prompt,
            num_inference_steps=2,
            width=64,
            height=64,
            guidance_scale=4.5,
            generator=generator,
            output_type="np",
        )
    return out.images[0].tobytes()
