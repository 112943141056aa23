"""Infotext parse time at 200 KB and 2 MB: linear growth means a ratio near 10×.

    .venv/bin/python bench/parser_scale.py [--repeat 5] [--sd-parsers PATH]

Each crafted shape is parsed uncapped (`parse_parameters(text, limit=None)`) at both sizes,
side by side in one run, best of `--repeat`; the ratio 2 MB / 200 KB must stay ≤ 12×. The
app itself never parses more than `MAX_INFOTEXT_CHARS` (64 K) characters: the last rows time
the capped import path on whole 2 MB and 20 MB PNGs, which is what an upload costs.

For contrast, the old regex (A1111's `re_param_code`) is timed on the first shape at 5 KB,
10 KB and 20 KB (quadratic: each doubling ×4), and, when `--sd-parsers` names an unpacked
sd-parsers wheel, its A1111 parser on its own worst case (a `Hashes: {` run) likewise.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = (200_000, 2_000_000)
# A1111 `modules/infotext_utils.py` `re_param_code`, as core/metadata.py used it before.
OLD_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def shapes(size: int) -> dict[str, str]:
    """Crafted infotexts of about `size` characters: each one a backtracking trap for a regex."""
    params = "Steps: 20, Sampler: Euler, CFG scale: 4.5, Seed: 1, Size: 1024x1024"
    return {
        "word run, no colon (the freeze)": "p\n" + "a" * size,
        "unclosed quoted value of backslashes": "p\nSteps: " + '"' + "\\" * size,
        "'a: ' repeated": "p\n" + "a: " * (size // 3),
        "'k: v, ' repeated (many keys)": "p\n" + "k: v, " * (size // 6),
        "space run before a size": f"p\n{params}, Size: " + " " * size + "x",
        "long prompt, normal settings line": "word " * (size // 5) + "\n" + params,
        "Fooocus JSON, long prompt": '{"prompt": "' + "w" * size + '", "steps": 20, "seed": 1}',
    }


def best(fn, repeat: int, *, sample: float = 0.1) -> float:
    """Seconds per call: the best of `repeat` samples, each calling `fn` for ≥ `sample` s.

    Sub-millisecond calls are looped so that a busy machine's scheduling noise averages out.
    """
    times = []
    for _ in range(repeat):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= sample:
                break
        times.append(elapsed / calls)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sd-parsers", type=Path, help="folder holding the sd_parsers package")
    args = parser.parse_args()

    from bench.common import machine_facts
    from core import metadata
    from testkit.hostile import png_with_text

    def parse(text: str) -> None:
        metadata.parse_parameters(text, limit=None)

    print(machine_facts())
    print("\n| shape | 200 KB | 2 MB | ratio |\n| --- | --- | --- | --- |")
    worst = 0.0
    small_shapes, large_shapes = shapes(SIZES[0]), shapes(SIZES[1])
    for name in small_shapes:
        # Alternate the two sizes round by round, so both meet the same machine load.
        smalls, larges = [], []
        for _ in range(args.repeat):
            smalls.append(best(lambda t=small_shapes[name]: parse(t), 1))
            larges.append(best(lambda t=large_shapes[name]: parse(t), 1))
        small, large = min(smalls), min(larges)
        ratio = large / small
        worst = max(worst, ratio)
        print(f"| {name} | {small * 1e3:.2f} ms | {large * 1e3:.2f} ms | {ratio:.1f}× |")
    print(f"\nworst ratio 2 MB / 200 KB: {worst:.1f}× (target ≤ 12×)")

    print("\n| upload through the import path (capped) | time |\n| --- | --- |")
    for megabytes in (2, 19):
        png = png_with_text(("parameters", "p\n" + "a" * (megabytes * 1_000_000)))

        def upload(data=png):
            with contextlib.suppress(metadata.MetadataError):
                metadata.parameters_from_png(data)

        print(
            f"| {megabytes} MB PNG, word-run infotext | {best(upload, args.repeat) * 1e3:.2f} ms |"
        )

    print("\n| old regex (before), word run | time |\n| --- | --- |")
    for size in (5_000, 10_000, 20_000):
        line = "a" * size
        seconds = best(lambda x=line: OLD_RE_PARAM.findall(x), 1, sample=0)
        print(f"| {size // 1000} KB | {seconds * 1e3:.0f} ms |")

    if args.sd_parsers:
        sys.path.insert(0, str(args.sd_parsers))
        from sd_parsers.parsers._automatic1111 import _extract_metadata

        print("\n| sd-parsers 0.6 A1111 line, `Hashes: {` run | time |\n| --- | --- |")
        for size in (50_000, 100_000, 200_000):
            line = "Hashes: {" * (size // 9)
            t = best(lambda x=line: _extract_metadata(x), 1, sample=0)
            print(f"| {size // 1000} KB | {t * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
