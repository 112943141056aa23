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


class DropMessage(logging.Filter):
    """Drop log records whose message contains `fragment`; pass every other record."""

    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_library_noise() -> None:
    """Install the filters (idempotent); call before diffusers or transformers is imported."""
    logger = logging.getLogger(_TRANSFORMERS_IMPORTS)
    if not any(isinstance(f, DropMessage) for f in logger.filters):
        logger.addFilter(DropMessage(TORCHVISION_FALLBACK))
