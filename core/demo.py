"""Build a tiny random-weight SD3 pipeline offline from the real diffusers classes.

It serves the tests, the browser check and anyone without the 16 GB download: every
component is the class the real model uses, only with tiny configs, so the same
loading, generation and saving code runs against it. Images are noise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core.quiet import quiet_library_noise

log = logging.getLogger(__name__)

DEMO_MODEL = "demo"
DEMO_LABEL = "demo model — random weights, images are noise"

# Sizes obey SD3's shape rules (see NOTES-sd3.md): caption_projection_dim equals
# heads × head_dim; joint_attention_dim equals T5's d_model and is at least the two
# CLIP hidden sizes added; pooled_projection_dim is the two CLIP projections added.
_CLIP_HIDDEN = 16
_CLIP_PROJECTION = 16
_T5_D_MODEL = 32
_HEADS = 4
_HEAD_DIM = 8


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table, which CLIP's BPE uses."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in _bytes_to_unicode().values():
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    # No merges: every word is spelled out byte by byte, which is all a demo needs.
    # model_max_length is CLIP's context; the pipeline pads and truncates to it.
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_tokenizer():
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"
    pieces += [(char, -3.0) for char in alphabet]
    pieces += [("▁" + char, -2.5) for char in alphabet]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


def _clip_text_model(vocab_size: int, seed: int):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=_CLIP_HIDDEN,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=_CLIP_PROJECTION,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModelWithProjection(config).eval()


def build_demo_pipeline(seed: int = 0, dtype: Any = None):
    """Return a tiny `StableDiffusion3Pipeline` with deterministic random weights.

    `dtype` (a torch dtype) casts every model before the pipeline is assembled; the
    weights are drawn in float32 first, so each dtype gets the same weights, rounded.
    """
    quiet_library_noise()
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import T5Config, T5EncoderModel

    clip_tokenizer = _clip_tokenizer()
    clip_tokenizer_2 = _clip_tokenizer()
    t5_tokenizer = _t5_tokenizer()

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=128,  # the pipeline's default size: 128 latents × 8 = 1024 px
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=_HEAD_DIM,
        num_attention_heads=_HEADS,
        joint_attention_dim=_T5_D_MODEL,
        caption_projection_dim=_HEADS * _HEAD_DIM,
        pooled_projection_dim=2 * _CLIP_PROJECTION,
        pos_embed_max_size=96,  # 1440 px / 16 = 90 patches per side at the largest size
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),  # four levels: vae_scale_factor 8, as SD3
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=1024,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()
    torch.manual_seed(seed + 2)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=_T5_D_MODEL,
            d_kv=16,
            d_ff=64,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()
    models = {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": _clip_text_model(len(clip_tokenizer), seed + 3),
        "text_encoder_2": _clip_text_model(len(clip_tokenizer_2), seed + 4),
        "text_encoder_3": t5,
    }
    if dtype is not None:
        for model in models.values():
            # torch's own cast of floating-point parameters and buffers: what diffusers'
            # `ModelMixin.to(dtype)` does for a model without quantization, minus its warning
            # "modules … should be kept in float32: []", which diffusers 0.42 prints on every
            # dtype cast (`_keep_in_fp32_modules or []`), even when the list is empty.
            torch.nn.Module.to(model, dtype=dtype)
    return StableDiffusion3Pipeline(
        **models,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        tokenizer=clip_tokenizer,
        tokenizer_2=clip_tokenizer_2,
        tokenizer_3=t5_tokenizer,
    )


def save_demo_pipeline(directory: Path, seed: int = 0) -> Path:
    """Write the demo pipeline as a diffusers folder that `from_pretrained` reads."""
    build_demo_pipeline(seed).save_pretrained(directory, safe_serialization=True)
    return directory
