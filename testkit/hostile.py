"""Crafted hostile inputs shared by the hostile-input suite, the browser test and the benchmark.

Each builder returns real bytes as an attacker would upload them; nothing here is a mock.
"""

from __future__ import annotations

import io
import re
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The infotext that made A1111's parameter regex (and ours, before) run in quadratic time:
# a last line of word characters with no colon. 300 KB froze the server for minutes.
SLOW_REGEX_INFOTEXT = "p\n" + "a" * 300_000


def chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with a correct length and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_text(*texts: tuple[str, str], size: int = 8, kind: bytes = b"tEXt") -> bytes:
    """A small real RGB PNG (Pillow) with extra text chunks (keyword, text) of `kind`."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buffer, format="PNG")
    data = buffer.getvalue()
    iend = data.rindex(b"IEND") - 4
    extra = b""
    for keyword, text in texts:
        key = keyword.encode("latin-1")
        if kind == b"tEXt":
            body = key + b"\0" + text.encode("latin-1", errors="replace")
        elif kind == b"zTXt":
            body = key + b"\0\0" + zlib.compress(text.encode("latin-1", errors="replace"), 9)
        else:  # iTXt, uncompressed UTF-8
            body = key + b"\0\0\0\0\0" + text.encode("utf-8")
        extra += chunk(kind, body)
    return data[:iend] + extra + data[iend:]


def bomb_png(side: int = 24_000, *, text: str | None = "Steps: 2, Sampler: x, Seed: 1") -> bytes:
    """A single-colour `side`×`side` 1-bit greyscale PNG: a few hundred KB on disk.

    Decoding it needs side² pixels of memory (576 megapixels at 24000), which is what
    Pillow's DecompressionBombError is about.
    """
    row = b"\0" + b"\0" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(side)]
    idat = b"".join(parts) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    texts = chunk(b"tEXt", b"parameters\0" + text.encode()) if text else b""
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + texts + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def ztxt_bomb_png(megabytes: int = 50) -> bytes:
    """A PNG whose zTXt `parameters` chunk inflates to `megabytes` MB of spaces."""
    compressor = zlib.compressobj(9)
    block = b" " * 1_000_000
    data = b"".join(compressor.compress(block) for _ in range(megabytes)) + compressor.flush()
    body = b"parameters\0\0" + data
    plain = png_with_text()
    iend = plain.rindex(b"IEND") - 4
    return plain[:iend] + chunk(b"zTXt", body) + plain[iend:]


def jpeg_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 0, 255)).save(buffer, format="JPEG")
    return buffer.getvalue()


_CODE_SPAN = re.compile(r"`[^`]*`")


def outside_code_spans(markdown: str) -> str:
    """The parts of a markdown message that would be rendered as markdown (not code spans)."""
    return _CODE_SPAN.sub("", markdown)
