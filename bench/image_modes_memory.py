"""Resident memory after the first image-to-image and inpaint vs after text-to-image alone.

Target (issue 18): ≤ 1.03×, because `core.image_modes.mode_pipeline` builds both pipelines
with `from_pipe` on the loaded modules. Each case runs in a fresh Python so the figures do
not mix. The demo pipeline's transformer is swapped for a wider one (12 layers × 768, about
250 M parameters, 1 GB in float32) so the weights, not Python and torch, are most of what
is resident: a second copy would show. Two contrasts are measured the same way:

- `copy`: the img2img/inpaint pipelines on deep copies of the modules (what to avoid);
- `bf16-no-dtype`: a bfloat16 pipeline handed to diffusers' `from_pipe` without `dtype`,
  which casts the shared modules to float32 in place.

And the app's own path (issue 18's phase 2): `backend` / `backend-bf16` load that pipeline
into `core.local.LocalBackend` and make a text-to-image request, then a Vary and an
Inpaint request of its result (`backend.generate`, as the Generate button does).

    .venv/bin/python -m bench.image_modes_memory [--size 512] [--steps 4]
"""

from __future__ import annotations

import argparse

from bench.common import library_versions, machine_facts
from testkit.child import run_child

CHILD = r"""
import copy, gc, json, sys
import numpy as np, psutil, torch
from PIL import Image
from diffusers import SD3Transformer2DModel, StableDiffusion3Img2ImgPipeline
from diffusers import StableDiffusion3InpaintPipeline, StableDiffusion3Pipeline
from core.demo import build_demo_pipeline
from core.image_modes import prompt_embeddings, run_image_mode

case, size, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
base = build_demo_pipeline()
torch.manual_seed(0)
config = {**base.transformer.config, "num_layers": 12, "num_attention_heads": 12,
          "attention_head_dim": 64, "caption_projection_dim": 768}
wide = SD3Transformer2DModel.from_config(config).eval()
pipe = StableDiffusion3Pipeline(**{**base.components, "transformer": wide})
del base
dtype = torch.bfloat16 if case in ("bf16-no-dtype", "backend-bf16") else torch.float32
pipe = pipe.to(dtype=dtype)
pipe.set_progress_bar_config(disable=True)
params = sum(p.numel() for p in pipe.transformer.parameters())

def rss():
    gc.collect()
    return psutil.Process().memory_info().rss

if case.startswith("backend"):
    from core.device import DeviceChoice
    from core.generation import GenerationRequest
    from core.local import LoadedPipeline, LocalBackend
    from core.models import DEMO
    from core.sources import from_image

    name = str(dtype).removeprefix("torch.")
    choice = DeviceChoice(device="cpu", dtype=name, device_reason="bench", dtype_reason="bench")
    loaded = LoadedPipeline(pipe=pipe, model="demo", choice=choice, load_seconds=0.0, family=DEMO)
    backend = LocalBackend(model="demo", loader=lambda **_: loaded)
    ask = dict(prompt="a fox", negative_prompt="blur", family="demo", num_inference_steps=steps)
    first = backend.generate(GenerationRequest(**ask, width=size, height=size)).images[0]
    after_txt2img = rss()
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, size // 2, size // 2))
    source = from_image(first)
    backend.generate(GenerationRequest(**ask, mode="img2img", source=source))
    backend.generate(GenerationRequest(**ask, mode="inpaint", source=source, mask=from_image(mask)))
    print("RESULT" + json.dumps({"params": params, "txt2img": after_txt2img, "modes": rss(),
                                 "dtype_after": str(pipe.transformer.dtype)}))
    sys.exit(0)
embeds = prompt_embeddings(pipe, prompt="a fox", negative_prompt="blur", guidance_scale=4.5)
with torch.inference_mode():
    source = pipe(**embeds, guidance_scale=4.5, num_inference_steps=steps, width=size,
                  height=size, generator=torch.Generator().manual_seed(1)).images[0]
after_txt2img = rss()
mask = Image.new("L", (size, size), 0)
mask.paste(255, (size // 4, size // 4, size // 2, size // 2))
options = dict(embeds=embeds, image=source, seed=1, steps=steps, guidance_scale=4.5, strength=0.6)
if case in ("from_pipe", "bf16-no-dtype"):
    if case == "bf16-no-dtype":
        StableDiffusion3Img2ImgPipeline.from_pipe(pipe)  # no dtype: casts the shared modules
        embeds = prompt_embeddings(pipe, prompt="a fox", negative_prompt="blur", guidance_scale=4.5)
        options["embeds"] = embeds  # the encoders are float32 now too
    run_image_mode(pipe, mode="img2img", **options)
    run_image_mode(pipe, mode="inpaint", mask=mask, **options)
else:  # "copy": separate pipelines on copied modules
    for cls, extra in ((StableDiffusion3Img2ImgPipeline, {}),
                       (StableDiffusion3InpaintPipeline, {"mask_image": mask})):
        other = cls(**copy.deepcopy(pipe.components))
        other.set_progress_bar_config(disable=True)
        with torch.inference_mode():
            other(**embeds, image=source, strength=0.6, guidance_scale=4.5,
                  num_inference_steps=steps, width=size, height=size, **extra)
        globals().setdefault("kept", []).append(other)
after_modes = rss()
print("RESULT" + json.dumps({"params": params, "txt2img": after_txt2img, "modes": after_modes,
                             "dtype_after": str(pipe.transformer.dtype)}))
"""


def run(case: str, size: int, steps: int) -> dict:
    return run_child(CHILD, case, str(size), str(steps), timeout=900)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)  # the demo family's smallest
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    print(machine_facts())
    print(library_versions("torch", "diffusers"))
    print(f"\n{args.size}×{args.size}, {args.steps} steps; RSS after gc, fresh process per case")
    header = f"{'after txt2img':>14} {'after +img2img+inpaint':>24} {'ratio':>7}"
    print(f"  {'case':16} {header}  dtype after")
    for case in ("backend", "backend-bf16", "from_pipe", "copy", "bf16-no-dtype"):
        got = run(case, args.size, args.steps)
        ratio = got["modes"] / got["txt2img"]
        print(
            f"  {case:16} {got['txt2img'] / 2**20:11.0f} MiB {got['modes'] / 2**20:21.0f} MiB "
            f"{ratio:6.3f}×  {got['dtype_after']}  (transformer {got['params'] / 1e6:.0f} M params)"
        )


if __name__ == "__main__":
    main()
