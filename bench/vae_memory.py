"""Measure the full-size SD3.5 VAE decode: peak memory, time and tile seams.

Builds `AutoencoderKL` from the SD3.5 VAE config with random weights (no download) and
decodes one random latent. Run each case in its own process: peak RSS is per process.

    python -m bench.vae_memory --size 1024 --tile 512
    python -m bench.vae_memory --size 512 --tile 0 --save /tmp/ref.pt     # untiled reference
    python -m bench.vae_memory --size 512 --tile 256 --compare /tmp/ref.pt  # seam error

`--tile 0` decodes without tiling. Peak RSS includes torch itself and the weights
(≈0.34 GB in float32); the "before" figure is the RSS just before the decode.

Measured 2026-11-26 (float32, CPU, 2 shared cores under load average 5–8, so the times
compare only roughly; overlap 0.25; RSS before the decode 0.70 GB in every run):

    size   tile      peak RSS   decode    seams vs the untiled decode
    512²   untiled   1.77 GB    144 s     reference (std 0.363)
    512²   256 px    1.16 GB    264 s     mean |Δ| 0.035, max |Δ| 0.55 (worst at the edge tile)
    1024²  256 px    1.17 GB    809 s
    1024²  512 px    1.77 GB    460 s
    (NOTES-sd3.md, same VAE: 1024² untiled 4.55 GB / 53 s, 512 px tiles 1.77 GB / 44 s)

Default SD_VAE_TILE=512: it cuts the 1024² decode from 4.55 to 1.77 GB and is not slower
than untiled; 256 px saves another 0.6 GB but decodes ~1.7× slower here and has 4× as
many tiles (36 vs 9 at 1024²), each with its own GroupNorm statistics (mean error ≈10 % of
the image's spread at 512²).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from bench.common import SD35_VAE


def _rss_gb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1e6
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--tile", type=int, default=512, help="tile side in pixels; 0 = untiled")
    parser.add_argument("--overlap", type=float, default=0.25, help="tile overlap factor")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--save", help="save the decoded image tensor here (a reference)")
    parser.add_argument("--compare", help="compare against a saved reference")
    args = parser.parse_args()

    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**SD35_VAE).eval().to(getattr(torch, args.dtype))
    if args.tile:
        vae.enable_tiling()
        vae.tile_sample_min_size = args.tile
        vae.tile_latent_min_size = args.tile // 8
        vae.tile_overlap_factor = args.overlap
    latent = torch.randn(
        1, 16, args.size // 8, args.size // 8, generator=torch.Generator().manual_seed(1)
    ).to(vae.dtype)
    before = _rss_gb()
    start = time.perf_counter()
    with torch.inference_mode():
        image = vae.decode(latent).sample.float()
    seconds = time.perf_counter() - start
    result = {
        "size": args.size,
        "tile": args.tile or None,
        "overlap": args.overlap if args.tile else None,
        "dtype": args.dtype,
        "params_m": round(sum(p.numel() for p in vae.parameters()) / 1e6, 1),
        "rss_before_gb": round(before, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "decode_s": round(seconds, 1),
    }
    if args.save:
        torch.save(image, args.save)
    if args.compare:
        reference = torch.load(args.compare)
        diff = (image - reference).abs()
        # Seams: error in columns near tile borders vs the image's own spread.
        result.update(
            ref_std=round(reference.std().item(), 4),
            mean_abs_diff=round(diff.mean().item(), 4),
            max_abs_diff=round(diff.max().item(), 4),
            worst_column=int(diff.mean(dim=(0, 1, 2)).argmax().item()),
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
