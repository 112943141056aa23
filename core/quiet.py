"""Library messages that are only noise for this app, silenced one message at a time.

Never a whole logger or warning category: each filter drops one known message, so
anything else those libraries say still reaches the log.
"""

from __future__ import annotations

import logging

# transformers 5 says, once per class, that `CLIPImageProcessor` / `SiglipImageProcessor`
# fall back to their Pillow versions without torchvision. diffusers' SD3 pipeline module
# imports them for IP-Adapter image prompts, which this app never uses, and torchvision
# from PyPI does not run beside the pinned CPU torch (see README): nothing to act on.
TORCHVISION_FALLBACK = "requires torchvision (not installed); falling back to"
_TRANSFORMERS_IMPORTS = "transformers.utils.import_utils"
# torchao 0.18 (imported by every `import diffusers`: transformers' torchao quantizer) logs at
# import, on torch 2.13: a pytree note per torchao Enum type (torch now handles them itself)
# and, on a CPU build, one "Failed to load …/_C_*.so" per CUDA-only extension. Neither is
# something to act on: int8/float8 weight-only quantization needs none of those kernels.
PYTREE_ENUM_NOTE = "is an Enum subclass and is now natively supported by torch.compile"
TORCHAO_EXTENSION = "Failed to load "
# diffusers 0.42.1 then looks for torchao 0.15's tensor classes (gone in 0.18) to allow them
# in `torch.load`: that only matters for checkpoints saved already quantized by torchao,
# which this app never loads (it quantizes after loading, core.quantize).
DIFFUSERS_TORCHAO_CLASSES = "Unable to import `torchao` Tensor objects"
# (logger, message fragment): each one filter on the logger that emits it.
FILTERS = (
    (_TRANSFORMERS_IMPORTS, TORCHVISION_FALLBACK),
    ("torch.utils._pytree", PYTREE_ENUM_NOTE),
    ("torchao", TORCHAO_EXTENSION),
    ("diffusers.quantizers.torchao.torchao_quantizer", DIFFUSERS_TORCHAO_CLASSES),
)


class DropMessage(logging.Filter):
    """Drop log records whose message contains `fragment`; pass every other record."""

    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_library_noise() -> None:
    """Install the filters (idempotent); call before diffusers or transformers is imported."""
    for name, fragment in FILTERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessage) and f.fragment == fragment for f in logger.filters):
            logger.addFilter(DropMessage(fragment))
