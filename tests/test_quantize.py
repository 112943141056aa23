"""Quantized loading on the real tiny pipeline (CPU, torchao int8) and the record it leaves."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from core.demo import build_demo_pipeline
from core.generation import GenerationRequest
from core.local import load_pipeline, run_pipeline
from core.quantize import (
    QuantizationError,
    facts_of,
    quant_record,
    quantize_pipeline,
    quiet_torchao_import_logs,
    same_quantization,
    torchao_config,
    torchao_version,
)
from tests.conftest import APP_ROOT, SMALL

pytest.importorskip("torchao", reason="quantization needs torchao (make install)")

REQUEST = GenerationRequest(prompt="a red fox on a long winding mountain road", seed=3, **SMALL)
T5_INT8 = f"t5:int8-weight-only(torchao {torchao_version()})"


def image(pipe) -> bytes:
    return run_pipeline(pipe, REQUEST)[0][0].tobytes()


@pytest.fixture(name="plain_bytes", scope="module")
def fixture_plain_bytes():
    return image(build_demo_pipeline().to(dtype=torch.float32))


@pytest.fixture(name="t5_int8", scope="module")
def fixture_t5_int8():
    """The demo with T5 in int8, its facts, and its image of REQUEST (made once)."""
    pipe = build_demo_pipeline().to(dtype=torch.float32)
    facts = quantize_pipeline(pipe, {"text_encoder_3": "int8"})
    return pipe, facts, image(pipe)


def test_int8_t5_quantizes_linear_weights_only(t5_int8):
    """int8 T5: every Linear weight becomes torchao's Int8Tensor; the embedding stays float."""
    pipe, facts, _ = t5_int8
    t5 = pipe.text_encoder_3
    kinds = {type(m.weight).__name__ for m in t5.modules() if isinstance(m, torch.nn.Linear)}
    assert kinds == {"Int8Tensor"}
    assert t5.shared.weight.dtype == torch.float32
    assert type(pipe.transformer.transformer_blocks[0].attn.to_q.weight) is torch.nn.Parameter
    assert facts.label == T5_INT8
    assert facts_of(pipe).label == T5_INT8  # read back from the weights themselves
    assert facts.released_bytes == 0  # built in memory: nothing is file-mapped


def test_int8_t5_pixels_repeat_and_differ_from_unquantized(t5_int8, plain_bytes):
    """int8 T5 generates; the same request twice gives the same bytes, unlike float32's."""
    pipe, _, first = t5_int8
    assert len(first) == 512 * 512 * 3
    assert image(pipe) == first  # bit-identical run to run
    assert first != plain_bytes  # quantized weights change pixels: records must say so


def test_loaded_folder_quantizes_like_the_built_pipeline(t5_int8, demo_dir):
    """A pipeline read from a folder (the full-size path) quantizes to the same pixels."""
    loaded = load_pipeline(model=str(demo_dir), device="cpu", dtype="float32")
    facts = quantize_pipeline(loaded.pipe, {"text_encoder_3": "int8"})
    assert facts.label == T5_INT8
    # The replaced float32 weights' file pages were handed back, and the pixels are intact.
    assert facts.released_bytes > 0
    assert image(loaded.pipe) == t5_int8[2]


def test_release_never_touches_anonymous_memory():
    """Pages outside a weights-file mapping are left alone (madvise would zero them)."""
    from core.quantize import file_mappings, release_file_pages

    tensor = torch.arange(1 << 16, dtype=torch.float32)  # 256 kB of anonymous memory
    size = tensor.numel() * tensor.element_size()
    assert release_file_pages(tensor.data_ptr(), size, mappings=file_mappings()) == 0
    assert release_file_pages(tensor.data_ptr(), size, mappings=[]) == 0
    assert torch.equal(tensor, torch.arange(1 << 16, dtype=torch.float32))


def test_from_pretrained_config_gives_the_same_pixels(t5_int8, demo_dir):
    """transformers' TorchAoConfig in from_pretrained quantizes T5 to the same pixels."""
    from diffusers import PipelineQuantizationConfig, StableDiffusion3Pipeline
    from transformers import TorchAoConfig

    config = PipelineQuantizationConfig(
        quant_mapping={"text_encoder_3": TorchAoConfig(torchao_config("int8"))}
    )
    pipe = StableDiffusion3Pipeline.from_pretrained(
        demo_dir, dtype=torch.float32, quantization_config=config
    )
    pipe.set_progress_bar_config(disable=True)
    assert facts_of(pipe).label == T5_INT8
    assert image(pipe) == t5_int8[2]


def test_transformer_int8_and_dropped_t5():
    """int8 for the transformer too; a dropped T5 is skipped, not an error."""
    pipe = build_demo_pipeline().to(dtype=torch.float32)
    pipe = type(pipe)(**{**pipe.components, "text_encoder_3": None, "tokenizer_3": None})
    facts = quantize_pipeline(pipe, {"text_encoder_3": "int8", "transformer": "int8"})
    assert facts.components == {"transformer": "int8-weight-only"}
    assert facts.label == f"transformer:int8-weight-only(torchao {torchao_version()})"
    assert len(image(pipe)) == 512 * 512 * 3


def test_quantizing_leaves_inductor_settings_alone(t5_int8):
    """torchao's default config would turn on coordinate-descent autotuning for every compile."""
    import torch._inductor.config as inductor

    assert inductor.coordinate_descent_tuning is False
    assert torchao_config("int8").set_inductor_config is False


def test_nothing_to_quantize_is_none():
    """An empty plan quantizes nothing and records "none"."""
    pipe = build_demo_pipeline()
    assert quantize_pipeline(pipe, {}).label == "none"
    assert facts_of(pipe).label == "none"


@pytest.mark.parametrize(
    ("method", "words"),
    [("fp8", "float8 needs a CUDA GPU"), ("nf4", "from_pretrained"), ("int4", "unknown")],
)
def test_unavailable_methods_are_refused(method, words):
    """float8 and NF4 cannot be applied in place on this CPU; the error says why."""
    with pytest.raises(QuantizationError, match=words):
        quantize_pipeline(build_demo_pipeline(), {"transformer": method})


def test_record_string_and_like_with_like():
    """Records name each quantized component; verify compares like with like."""
    assert quant_record({}, "torchao 0.18.0") == "none"
    both = quant_record(
        {"transformer": "float8-weight-only", "text_encoder_3": "int8-weight-only"},
        "torchao 0.18.0",
    )
    assert both == "t5:int8-weight-only,transformer:float8-weight-only(torchao 0.18.0)"
    assert same_quantization(both, both) == (True, f"same quantization as recorded ({both})")
    assert same_quantization(None, "none")[0] is True  # records from before quantization
    same, sentence = same_quantization("none", T5_INT8)
    assert same is False
    assert "recorded with quantization none, now t5:int8" in sentence
    assert "not a reproducibility failure" in sentence


def test_import_noise_filter_drops_only_the_known_lines(caplog):
    """The filter drops torchao's two known import-time lines and nothing else."""
    quiet_torchao_import_logs()
    quiet_torchao_import_logs()  # idempotent: one filter per logger
    pytree = logging.getLogger("torch.utils._pytree")
    assert len(pytree.filters) == 1
    with caplog.at_level(logging.WARNING):
        pytree.warning("<enum 'KernelPreference'> is an Enum subclass and is now natively "
                       "supported by torch.compile as an opaque value type.")  # fmt: skip
        logging.getLogger("torchao").warning("Failed to load /x/_C_mxfp8.so: nope")
        pytree.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]


def test_import_noise_is_gone_in_a_fresh_process():
    """Importing torchao after quiet_torchao_import_logs() prints none of the known lines."""
    code = (
        "from core.quantize import _ImportNoise, quiet_torchao_import_logs\n"
        "quiet_torchao_import_logs()\n"
        "import torchao\n"
        "print('DROPPED', _ImportNoise.dropped)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=APP_ROOT, capture_output=True, text=True, check=True
    )
    dropped = int(proc.stdout.split("DROPPED")[1])
    if dropped == 0:
        pytest.skip("this torch/torchao pair logs none of the known lines at import")
    assert "is an Enum subclass" not in proc.stderr
    assert "Failed to load" not in proc.stderr
