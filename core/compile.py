"""Regional compilation of the SD3 transformer, with a compile cache that survives restarts.

diffusers 0.42.1's `SD3Transformer2DModel._repeated_blocks` is `[]`, so
`compile_repeated_blocks()` compiles nothing: `compile_blocks` compiles each
`JointTransformerBlock` in place (`fullgraph=True`). The blocks share three shapes (dual
attention in the first 13, plain after, the last one context-only), so the first image
compiles three graphs instead of one whole transformer (H200: 20.0 s vs 80.6 s first image;
2.14 vs 2.16 s after).

`use_cache_folder(folder)` points torch's on-disk caches there before the first compile:
TORCHINDUCTOR_CACHE_DIR (inductor's FX graph cache, the AOT-autograd cache and, under
`triton/`, the GPU kernels), with both caches switched on by their environment variables
(TORCHINDUCTOR_FX_GRAPH_CACHE=1, TORCHINDUCTOR_AUTOGRAD_CACHE=1). The default is
/tmp/torchinductor_<user>, which a restart of the machine or container empties. After the
first image `save_mega_cache(folder)` also writes torch's portable "mega-cache"
(`torch.compiler.save_cache_artifacts`), and `use_cache_folder` loads it back at the next
start (`torch.compiler.load_cache_artifacts`), so a second start skips inductor's code
generation even where only that one file was kept.

`decide_compile(setting, device)` is the pure SD_COMPILE decision: `auto` (on for CUDA,
off elsewhere), `true`, `false`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COMPILE_CHOICES = ("auto", "true", "false")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
CACHE_SUBFOLDER = "torch-compile"
MEGA_CACHE_FILE = "mega-cache.bin"
BLOCKS_ATTRIBUTE = "transformer_blocks"
FIRST_IMAGE_LABEL = "compiling (first image only)"  # the page's words for the first step
NEW_SIZE_LABEL = "compiling for a new image size (once)"
NEW_GUIDANCE_LABEL = "compiling for guidance on/off (once)"


def decide_compile(
    setting: str | bool | None, device: str, *, loras: bool = False
) -> tuple[bool, str]:
    """SD_COMPILE: `auto` (or unset) compiles on CUDA only, and not when a LoRA folder is set
    (`loras`: each LoRA switch would compile the blocks anew); `true` / `false` as set.

    Return (compile, the reason for the Hardware page).
    """
    if isinstance(setting, bool):
        text = "true" if setting else "false"
    else:
        text = (setting or "auto").strip().lower()
    if text in _TRUE:
        return True, "SD_COMPILE=true: the transformer's blocks are compiled"
    if text in _FALSE:
        return False, "SD_COMPILE=false: not compiled"
    if text != "auto":
        raise ValueError(f"SD_COMPILE={setting!r} is not valid; use one of: auto, true, false.")
    if device == "cuda" and loras:
        return False, (
            "SD_COMPILE=auto: not compiled because SD_LORA_DIR is set (each LoRA switch would "
            "compile the blocks anew); SD_COMPILE=true compiles and turns LoRAs off"
        )
    if device == "cuda":
        return True, (
            "SD_COMPILE=auto on CUDA: the transformer's blocks are compiled on the first image "
            "(cached on disk for the next start)"
        )
    return False, f"SD_COMPILE=auto: compiling pays on CUDA only; not compiled on {device}"


def cache_folder(base: str | os.PathLike[str]) -> Path:
    """The compile cache under `base` (SD_DATA_DIR or the Hugging Face cache), per torch."""
    import torch

    version = torch.__version__.replace("+", "_")
    return Path(base).expanduser() / CACHE_SUBFOLDER / f"torch-{version}"


@dataclass(frozen=True)
class CacheFacts:
    """Where the compile cache lives and whether an earlier start left anything in it."""

    folder: Path
    reused: bool  # the folder held cache files before this start
    files_before: int
    mega_cache_loaded: bool
    environment: dict[str, str]


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def use_cache_folder(folder: str | os.PathLike[str]) -> CacheFacts:
    """Point torch's compile caches at `folder` (created) and load its mega-cache if present.

    Call before the first compiled call: torch reads TORCHINDUCTOR_CACHE_DIR each time it
    needs the folder, so setting it here (not at import) is enough. Triton's kernels go
    under `<folder>/triton` unless TRITON_CACHE_DIR is set already.
    """
    path = Path(folder).expanduser().resolve()
    files_before = _count_files(path)
    path.mkdir(parents=True, exist_ok=True)
    environment = {
        "TORCHINDUCTOR_CACHE_DIR": str(path),
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
        "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
    }
    os.environ.update(environment)
    loaded = False
    mega = path / MEGA_CACHE_FILE
    if mega.is_file():
        loaded = _load_mega_cache(mega)
    facts = CacheFacts(
        folder=path,
        reused=files_before > 0,
        files_before=files_before,
        mega_cache_loaded=loaded,
        environment=environment,
    )
    log.info("compile cache %s (%d files before this start)", path, files_before)
    return facts


def _load_mega_cache(path: Path) -> bool:
    import torch

    try:
        info = torch.compiler.load_cache_artifacts(path.read_bytes())
    except Exception as exc:  # a stale or foreign file must not stop the load: compile anew
        log.warning("compile mega-cache %s not used: %s", path, type(exc).__name__)
        return False
    return info is not None


def save_mega_cache(folder: str | os.PathLike[str]) -> int:
    """Write torch's portable compile artifacts of this process to `folder`; return bytes."""
    import torch

    saved = torch.compiler.save_cache_artifacts()
    if not saved:
        return 0
    data, _info = saved
    path = Path(folder) / MEGA_CACHE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # atomic: a reader never sees half a file
    return len(data)


def _default_compile(block: Any) -> None:
    block.compile(fullgraph=True)


def compile_blocks(
    transformer: Any, *, compile_fn: Callable[[Any], None] = _default_compile
) -> int:
    """Compile each of the transformer's repeated blocks in place; return how many.

    In place (`nn.Module.compile`), so `pipe.transformer`, its offload hooks and its
    parameters stay as they are; compilation itself happens on the first call.
    """
    blocks = getattr(transformer, BLOCKS_ATTRIBUTE, None)
    if not blocks:
        raise ValueError(f"{type(transformer).__name__} has no {BLOCKS_ATTRIBUTE} to compile")
    for block in blocks:
        compile_fn(block)
    return len(blocks)


def compiled_blocks(transformer: Any) -> int:
    """How many of the transformer's blocks run through `torch.compile`."""
    blocks = getattr(transformer, BLOCKS_ATTRIBUTE, None) or []
    return sum(1 for b in blocks if getattr(b, "_compiled_call_impl", None) is not None)


@dataclass(frozen=True)
class CompileShapes:
    """What the compiled blocks see of an image: its pixel count (the token count) and the
    transformer's batch sizes (2 with CFG, 1 without, both when SLG runs its extra pass)."""

    pixels: int
    batches: frozenset[int]


class FirstImage:
    """Says "compiling" while an image's first step compiles the blocks: the first image
    after a compiled load, and once more for the first new size and the first change of
    CFG batch after it (measured on the tiny pipeline's blocks, torch 2.13: the first
    image compiles; a second size recompiles once, marking the token count dynamic, and
    every size after it reuses that graph; guidance off after on recompiles once for the
    batch). Other images, and every image of a load that did not compile, say nothing.
    """

    def __init__(self, compiled: bool) -> None:
        self._compiled = compiled
        self._pending = compiled
        self._lock = threading.Lock()
        self.seconds: float | None = None
        self._started: float | None = None
        self._pixels: set[int] = set()  # seen so far; two values: torch made it dynamic
        self._batches: set[int] = set()
        self.compiled_images = 0  # images that compiled (a caller compares before/after)

    @property
    def pending(self) -> bool:
        """The first compiled image is not done yet."""
        return self._pending

    def compiles(self, shapes: CompileShapes) -> str | None:
        """The page's words if an image of `shapes` compiles, else None."""
        with self._lock:
            if not self._compiled:
                return None
            if self._pending:
                return FIRST_IMAGE_LABEL
            if shapes.pixels not in self._pixels and len(self._pixels) < 2:
                return NEW_SIZE_LABEL
            if not shapes.batches <= self._batches and len(self._batches) < 2:
                return NEW_GUIDANCE_LABEL
            return None

    def started(self) -> None:
        with self._lock:
            if self._pending and self._started is None:
                self._started = time.perf_counter()

    def finished(self, shapes: CompileShapes | None = None) -> bool:
        """A compiling image is done (its `shapes` are compiled now); return True only for
        the call that ended the first image's compile."""
        with self._lock:
            self.compiled_images += 1
            if shapes is not None:
                self._pixels.add(shapes.pixels)
                self._batches.update(shapes.batches)
            if not self._pending:
                return False
            self._pending = False
            if self._started is not None:
                self.seconds = time.perf_counter() - self._started
            return True
