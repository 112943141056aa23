"""SD3.5 Large Turbo: SD3.5 Large distilled (ADD) to 4 steps without CFG.

Same architecture and files per component as Large (its transformer/config.json is the
same), so a local folder cannot tell the two apart: set SD_MODEL_FAMILY=sd35-large-turbo.
"""

from core.models.base import Family, StepPriors
from core.models.sd35_large import LARGE_COMPONENTS_GB, LARGE_STEP_S_1024, SD35_LARGE

SD35_LARGE_TURBO = Family(
    id="sd35-large-turbo",
    label="SD3.5 Large Turbo",
    hub_ids=("stabilityai/stable-diffusion-3.5-large-turbo",),
    licence_url=(
        "https://huggingface.co/stabilityai/stable-diffusion-3.5-large-turbo/blob/main/LICENSE.md"
    ),
    gated=True,
    # Every mode on the same loaded modules (diffusers' from_pipe): issue 18's image modes.
    pipelines={
        "txt2img": "StableDiffusion3Pipeline",
        "img2img": "StableDiffusion3Img2ImgPipeline",
        "inpaint": "StableDiffusion3InpaintPipeline",
        "upscale": "StableDiffusion3Img2ImgPipeline",  # a Lanczos resize, then image to image
    },
    components_gb=LARGE_COMPONENTS_GB,
    sizes=SD35_LARGE.sizes,
    # The model card's diffusers example: 4 steps, guidance 0.0 (CFG off), 1024².
    width=1024,
    height=1024,
    steps=4,
    guidance=0.0,
    # Derived, not measured: Large's derived step without CFG (guidance 0 runs a batch of
    # one instead of two: half the transformer work). Decode and encode as Large.
    priors=StepPriors(
        step_s_1024=round(LARGE_STEP_S_1024 / 2, 1),
        decode_s_1024=47.0,
        encode_s=19.0,
        measured=False,
    ),
    transformer_layers=38,
    # As Large; with its guidance 0 (no CFG) SLG would not run anyway.
    slg_layers=(7, 8, 9),
    slg_on=False,
    linear_share=SD35_LARGE.linear_share,
    sparse_tables=SD35_LARGE.sparse_tables,
    vae_decode_gb_per_mp=SD35_LARGE.vae_decode_gb_per_mp,
)
