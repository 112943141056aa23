"""SD3.5 Large: the 8.1 B-parameter MMDiT (38 layers), same pipeline class as Medium."""

from core.models.base import Family, SizeRules, StepPriors
from core.models.sd35_medium import MEDIUM_LINEAR_SHARE, SD35_MEDIUM, SPARSE_TABLES_BF16

# The transformer, from its config (transformer/config.json of the Hub repo: 38 layers,
# 38 heads × 64, caption_projection_dim 2432, pos_embed_max_size 192, no
# dual_attention_layers) built on torch's meta device with diffusers 0.42.1:
# 8,056,627,520 parameters + 89,653,248 in the pos_embed buffer = 8,146,280,768 values
# × 2 bytes = 16.29 GB at bf16 (the repo's two shards: 9.99 + 6.31 GB). The text encoders
# and the VAE are the same files as Medium's.
LARGE_COMPONENTS_GB = {**SD35_MEDIUM.components_gb, "transformer": 16.29}
# Quantized plans: the transformer is 8,053.7 M Linear of 8,146.3 M values
# (bench/quant_shares.py); its pos_embed is 192² × 2432 values. Text encoders as Medium's.
LARGE_LINEAR_SHARE = {**MEDIUM_LINEAR_SHARE, "transformer": 0.9886}
LARGE_SPARSE_TABLES_BF16 = {**SPARSE_TABLES_BF16, "transformer": 179_306_496}

# Derived, not measured: Medium's measured step (51 s at 1024², 2-core CPU, bf16, CFG)
# × the ratio of the two transformers' FLOPs for one step at 1024² with 333 text tokens
# (torch.utils.flop_counter on the meta-device models above: 31.1 vs 11.2 TFLOP, ×2.77).
# Decode and encode run the same VAE and text encoders as Medium.
LARGE_STEP_S_1024 = round(51.0 * 2.77, 1)

SD35_LARGE = Family(
    id="sd35-large",
    label="SD3.5 Large",
    hub_ids=("stabilityai/stable-diffusion-3.5-large",),
    licence_url=(
        "https://huggingface.co/stabilityai/stable-diffusion-3.5-large/blob/main/LICENSE.md"
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
    # The card calls it a 1-megapixel model; the app keeps Medium's range (sides a
    # multiple of 16, as SD3 requires), which holds ~1 MP at every aspect preset.
    sizes=SizeRules(min=512, max=1440, multiple=16),
    # The model card's diffusers example: 28 steps, guidance 3.5 (the pipeline's default
    # size, 1024²).
    width=1024,
    height=1024,
    steps=28,
    guidance=3.5,
    priors=StepPriors(
        step_s_1024=LARGE_STEP_S_1024, decode_s_1024=47.0, encode_s=19.0, measured=False
    ),
    transformer_layers=38,
    # diffusers' default layers (Medium's card's); reported to break Large's images
    # (diffusers issue #10455): offered, but off until someone turns it on.
    slg_layers=(7, 8, 9),
    slg_on=False,
    linear_share=LARGE_LINEAR_SHARE,
    sparse_tables=LARGE_SPARSE_TABLES_BF16,
    vae_decode_gb_per_mp=SD35_MEDIUM.vae_decode_gb_per_mp,  # the same VAE
)
