"""Library noise: each known message is silenced alone, at its source where there is one."""

from __future__ import annotations

import logging
import subprocess
import sys

from core.quiet import TORCHVISION_FALLBACK, DropMessage, quiet_library_noise
from tests.conftest import APP_ROOT


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_only_the_torchvision_fallback_notice_is_dropped():
    """The filter is installed once and drops that one notice; other messages still pass."""
    quiet_library_noise()
    quiet_library_noise()
    logger = logging.getLogger("transformers.utils.import_utils")
    assert sum(isinstance(f, DropMessage) for f in logger.filters) == 1
    collect = _Collect()
    logger.addHandler(collect)
    try:
        logger.warning("`CLIPImageProcessor` %s `CLIPImageProcessorPil`", TORCHVISION_FALLBACK)
        logger.warning("`torchvision` is broken")
    finally:
        logger.removeHandler(collect)
    assert collect.messages == ["`torchvision` is broken"]


def test_demo_load_and_generation_print_no_library_noise():
    """Loading the demo model in bfloat16 and generating prints no known library notice."""
    code = (
        "from core.local import load_pipeline, run_pipeline\n"
        "from core.generation import GenerationRequest\n"
        "loaded = load_pipeline(model='demo', dtype='bfloat16')\n"
        "run_pipeline(loaded.pipe, GenerationRequest(width=512, height=512, "
        "num_inference_steps=1))\n"
        "print(loaded.pipe.transformer.dtype)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=APP_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "torch.bfloat16"
    for noise in ("torchvision", "kept in float32", "torchao", "Enum subclass"):
        assert noise not in done.stderr, done.stderr


def test_demo_built_in_a_dtype_has_the_float32_weights_rounded():
    """Casting while building gives the same weights as building in float32 and casting."""
    import torch

    from core.demo import build_demo_pipeline

    built = build_demo_pipeline(dtype=torch.bfloat16)
    cast = build_demo_pipeline()
    for name in ("transformer", "vae", "text_encoder", "text_encoder_3"):
        for a, b in zip(
            getattr(built, name).state_dict().values(),
            getattr(cast, name).state_dict().values(),
            strict=True,
        ):
            expected = b.to(torch.bfloat16) if b.is_floating_point() else b
            assert a.dtype == expected.dtype and torch.equal(a, expected), name


def test_torchao_import_notes_are_dropped_one_filter_each(caplog):
    """torchao's two import-time notes are dropped, each by its own filter on its logger."""
    from core.quiet import PYTREE_ENUM_NOTE, TORCHAO_EXTENSION

    quiet_library_noise()
    quiet_library_noise()  # idempotent: one filter per message
    pytree, torchao = logging.getLogger("torch.utils._pytree"), logging.getLogger("torchao")
    assert [f.fragment for f in pytree.filters if isinstance(f, DropMessage)] == [PYTREE_ENUM_NOTE]
    assert [f.fragment for f in torchao.filters if isinstance(f, DropMessage)] == [
        TORCHAO_EXTENSION
    ]
    with caplog.at_level(logging.WARNING):
        pytree.warning("<enum 'KernelPreference'> is an Enum subclass and is now natively "
                       "supported by torch.compile as an opaque value type.")  # fmt: skip
        torchao.warning("Failed to load /x/_C_mxfp8.so: nope")
        pytree.warning("something else")
        torchao.warning("something else from torchao")
    assert [r.getMessage() for r in caplog.records] == [
        "something else",
        "something else from torchao",
    ]


def test_torchao_import_prints_no_known_note_in_a_fresh_process():
    """Importing torchao after quiet_library_noise() prints none of its known notes."""
    code = (
        "import core.quiet as q\n"
        "dropped = []\n"
        "keep = q.DropMessage.filter\n"
        "def counting(self, record):\n"
        "    ok = keep(self, record)\n"
        "    if not ok: dropped.append(self.fragment)\n"
        "    return ok\n"
        "q.DropMessage.filter = counting\n"
        "q.quiet_library_noise()\n"
        "import torchao\n"
        "print('DROPPED', len(dropped))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=APP_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    if int(done.stdout.split("DROPPED")[1]) == 0:
        import pytest

        pytest.skip("this torch/torchao pair logs none of the known notes at import")
    assert "is an Enum subclass" not in done.stderr
    assert "Failed to load" not in done.stderr
