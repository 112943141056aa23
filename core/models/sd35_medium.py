"""SD3.5 Medium: the app's default family (MMDiT-X, 2.5 B-parameter transformer)."""

from core.models.base import Family, SizeRules, StepPriors

MEDIUM_LINEAR_SHARE = {
    "transformer": 0.9077,
    "text_encoder_3": 0.9723,
    "text_encoder_2": 0.9080,
    "text_encoder": 0.6917,
    "vae": 0.0250,
}
# Read by index, never whole (bf16 bytes): the transformer's `pos_embed` (384² × 1536 values;
# a 1024² image reads 64² of the positions) and T5-XXL's token embedding (32,128 × 4,096,
# read for the prompt's tokens only).
SPARSE_TABLES_BF16 = {"transformer": 452_984_832, "text_encoder_3": 263_192_576}

SD35_MEDIUM = Family(
    id="sd35-medium",
    label="SD3.5 Medium",
    hub_ids=("stabilityai/stable-diffusion-3.5-medium",),
    licence_url=(
        "https://huggingface.co/stabilityai/stable-diffusion-3.5-medium/blob/main/LICENSE.md"
    ),
    gated=True,
    # Every mode on the same loaded modules (diffusers' from_pipe): issue 18's image modes.
    pipelines={
        "txt2img": "StableDiffusion3Pipeline",
        "img2img": "StableDiffusion3Img2ImgPipeline",
        "inpaint": "StableDiffusion3InpaintPipeline",
        "upscale": "StableDiffusion3Img2ImgPipeline",  # a Lanczos resize, then image to image
    },
    # Measured on the real architecture's bf16 files (NOTES-sd3, "Full-size SD3.5 Medium"):
    # 16.27 GB in all. The transformer checks against its config: 2,469,663,936 parameters
    # and persistent buffers (pos_embed) × 2 bytes = 4.94 GB.
    components_gb={
        "transformer": 4.94,
        "text_encoder_3": 9.52,  # T5-XXL
        "text_encoder_2": 1.39,  # CLIP-G
        "text_encoder": 0.25,  # CLIP-L
        "vae": 0.17,
    },
    # Trained up to 1440 px (~2 MP, its model card); SD3 needs sides divisible by 16.
    sizes=SizeRules(min=512, max=1440, multiple=16),
    # The model card's example: 1024², 40 steps, guidance 4.5.
    width=1024,
    height=1024,
    steps=40,
    guidance=4.5,
    # Measured on the full-size stand-in, 2-core CPU, bf16 (issue 13, NOTES-sd3): 1024²
    # 51 s per step (CFG), VAE 37–47 s with 512-px tiles, text encoding 16–19 s.
    priors=StepPriors(step_s_1024=51.0, decode_s_1024=47.0, encode_s=19.0, measured=True),
    transformer_layers=24,  # its transformer/config.json: num_layers 24
    # The model card recommends SLG "for better structure and anatomy coherency", with
    # layers 7, 8, 9 (diffusers' defaults): on from the start.
    slg_layers=(7, 8, 9),
    slg_on=True,
    # Linear weights' share of each component (bench/quant_shares.py on the real configs):
    # the transformer's 2,241.8 M Linear parameters of 2,243.2 M plus its 226.5 M-entry
    # `pos_embed` buffer; T5-XXL's 4,630.5 M of 4,762.3 M (its 131.6 M-entry token embedding
    # stays in bf16); CLIP-G 630.8 of 694.7 M; CLIP-L 85.5 of 123.7 M; the VAE is
    # convolutions (2.5 %) and is never quantized.
    linear_share=MEDIUM_LINEAR_SHARE,
    sparse_tables=SPARSE_TABLES_BF16,
    # Untiled VAE decode: H200 bf16 1024² 2.33 GB and 1440² 4.83 GB above the weights
    # (2.22 / 2.33 GB per MP); CPU fp32 4.55 / 8.31 GB whole-process, under twice this.
    vae_decode_gb_per_mp=2.35,
)
