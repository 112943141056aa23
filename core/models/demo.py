"""The demo: a tiny random-weight SD3 pipeline built offline (`core.demo`), images are noise.

Light defaults, so a newcomer's first click on `make run` answers in seconds rather than
the minute that 1024², 40 steps takes on 2 cores.
"""

from core.models.base import Family, SizeRules

DEMO = Family(
    id="demo",
    label="Demo model",
    hub_ids=(),
    licence_url="",
    gated=False,
    # Every mode on the same loaded modules (diffusers' from_pipe): issue 18's image modes.
    pipelines={
        "txt2img": "StableDiffusion3Pipeline",
        "img2img": "StableDiffusion3Img2ImgPipeline",
        "inpaint": "StableDiffusion3InpaintPipeline",
        "upscale": "StableDiffusion3Img2ImgPipeline",  # a Lanczos resize, then image to image
    },
    # A few hundred kB each in fact; judged by these, not by SD3.5's 16 GB.
    components_gb={
        "transformer": 0.001,
        "text_encoder_3": 0.001,
        "text_encoder_2": 0.001,
        "text_encoder": 0.001,
        "vae": 0.001,
    },
    # The same sides as SD3.5 Medium (its positional embedding covers 1440 px).
    sizes=SizeRules(min=512, max=1440, multiple=16),
    width=512,
    height=512,
    steps=20,
    guidance=4.5,
    priors=None,  # tiny: no estimate is worth showing
    # Two layers (core.demo): SLG skips layer 1 here, so the toggle works with `make run`
    # and in tests. Off at first, as on any model whose card does not recommend it.
    transformer_layers=2,
    slg_layers=(1,),
    slg_on=False,
    # Its tiny VAE's untiled decode: 0.56 GB at 1440² and 0.30 GB at 1024² in float32 on
    # the CPU (peak RSS over the loaded pipeline), 0.27 GB per MP; per MP at 16-bit, rounded up.
    vae_decode_gb_per_mp=0.15,
)
