"""Quantized loading on the real tiny pipeline (CPU, torchao int8) and the record it leaves."""

from __future__ import annotations

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
    same_quantization,
    torchao_config,
    torchao_version,
)
from tests.conftest import SMALL

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


@pytest.fixture(name="quantized_backend", scope="module")
def fixture_quantized_backend():
    """The app's backend on the demo with SD_QUANT=t5-int8 (loaded on first use)."""
    from core.local import LocalBackend
    from core.memory import MemoryOptions

    return LocalBackend(
        model="demo", device="cpu", dtype="float32", memory=MemoryOptions(quant="t5-int8")
    )


def test_sd_quant_loads_quantized_records_it_and_verifies_like_with_like(
    quantized_backend, t5_int8, tmp_path
):
    """SD_QUANT=t5-int8 through the app's own path: the loader quantizes T5 (the plan says
    so), the image equals the in-place quantized demo's, the record keeps how the model was
    quantized, and Regenerate & verify compares like with like — identical on the same
    quantization; on an unquantized model it says a difference is expected, not a failure."""
    from core.auth import LOCAL_USER, Visitor
    from core.history import keep_result, open_store
    from core.local import LocalBackend
    from core.settings import Settings
    from core.usecases import regenerate_and_verify

    result = quantized_backend.generate(REQUEST)
    facts = quantized_backend.loaded_facts
    assert facts.plan.quant == (("text_encoder_3", "int8"),)
    assert facts.plan.summary.startswith("offload none · with T5 · quantized t5:int8")
    assert facts.quantization == T5_INT8
    assert result.images[0].tobytes() == t5_int8[2]  # the pixels the quantized demo makes
    kept = keep_result(result, backend=quantized_backend, target=tmp_path, session_id="s")
    record = kept.records[0]
    assert kept.error is None and record.quantization == T5_INT8
    # not a request option: the options are the request's own (the demo's SLG, off)
    assert record.options() == dict(result.request.mode_options) == {"slg": "off"}
    assert not record.problems()
    assert f"Quantization: {T5_INT8!r}".replace("'", '"') in record.infotext()

    store, settings = open_store(tmp_path), Settings(data_dir=tmp_path)
    visitor = Visitor(id=LOCAL_USER)
    same = regenerate_and_verify(
        store, record, settings=settings, visitor=visitor, backend=quantized_backend
    )
    assert (
        same.same_quantization and same.quantization == f"same quantization as recorded ({T5_INT8})"
    )
    assert same.verification.identical

    plain = LocalBackend(model="demo", device="cpu", dtype="float32", memory=None)
    other = regenerate_and_verify(store, record, settings=settings, visitor=visitor, backend=plain)
    assert other.same_quantization is False
    assert other.quantization.startswith(f"recorded with quantization {T5_INT8}, now none")
    assert "not a reproducibility failure" in other.quantization
    assert not other.verification.identical  # the difference the sentence announced
