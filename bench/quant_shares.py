"""What share of each SD3.5 component's weight bytes weight-only quantization shrinks.

Builds each component from its real config on torch's meta device (no memory, no download)
and counts `torch.nn.Linear` weights against every parameter and buffer (the transformer's
`pos_embed` is a saved buffer). Prints the table behind `core.quant_plan.LINEAR_SHARE`.

    python -m bench.quant_shares
"""

from __future__ import annotations

from bench.common import SD35_VAE
from bench.gpu_sd35 import CLIP_G, CLIP_L, SD35_MEDIUM_TRANSFORMER, T5_XXL

# transformer/config.json of stabilityai/stable-diffusion-3.5-large (see core/models).
SD35_LARGE_TRANSFORMER = dict(
    SD35_MEDIUM_TRANSFORMER,
    num_layers=38,
    num_attention_heads=38,
    caption_projection_dim=2432,
    pos_embed_max_size=192,
    dual_attention_layers=(),
)


def shares() -> dict[str, tuple[float, float, float]]:
    """Component → (Linear weights M, all values M, Linear share)."""
    import torch
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    common = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=1)
    clip = CLIPTextModelWithProjection
    with torch.device("meta"):
        parts = {
            "transformer (Medium)": SD3Transformer2DModel(**SD35_MEDIUM_TRANSFORMER),
            "transformer (Large)": SD3Transformer2DModel(**SD35_LARGE_TRANSFORMER),
            "text_encoder_3 (T5-XXL)": T5EncoderModel(T5Config(**T5_XXL)),
            "text_encoder_2 (CLIP-G)": clip(CLIPTextConfig(**CLIP_G, **common)),
            "text_encoder (CLIP-L)": clip(CLIPTextConfig(**CLIP_L, **common)),
            "vae": AutoencoderKL(**SD35_VAE),
        }  # fmt: skip
    out = {}
    for name, model in parts.items():
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        values = sum(t.numel() for t in [*model.parameters(), *model.buffers()])
        out[name] = (linear / 1e6, values / 1e6, linear / values)
    return out


def main() -> None:
    print("| component | Linear weights (M) | all parameters + buffers (M) | Linear share |")
    print("|---|---|---|---|")
    for name, (linear, values, share) in shares().items():
        print(f"| {name} | {linear:,.1f} | {values:,.1f} | {share:.4f} |")


if __name__ == "__main__":
    main()
