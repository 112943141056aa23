"""The quantized planner (SD_QUANT) and the SD_VAE_TILE=auto decision: pure functions."""

from __future__ import annotations

import pytest

from core.memory import GB, component_bytes
from core.quant_plan import (
    LINEAR_SHARE,
    QUANT_CHOICES,
    Machine,
    choose_vae_tile,
    plan_quantized,
    quant_label,
    quantized_bytes,
    refusal,
    untiled_decode_bytes,
)

SIZES = component_bytes("bfloat16")  # SD3.5 Medium: 16.27 GB in bf16
CPU = Machine("cpu")
H200 = Machine("cuda", capability=(9, 0))
RTX3060 = Machine("cuda", capability=(8, 6))
RTX4060 = Machine("cuda", capability=(8, 9))


def plan(machine, vram=None, ram=32, **kw):
    return plan_quantized(
        SIZES,
        machine=machine,
        free_vram_bytes=None if vram is None else int(vram * GB),
        free_ram_bytes=int(ram * GB),
        **kw,
    )


def chosen(p):
    c = p.chosen
    return None if c is None else (c.quant_label, c.offload, c.drop_t5)


# machine, free VRAM GB, free RAM GB → verdict, (quant, offload, drop T5)
LADDER = [
    ("cpu 24 GB: as is", CPU, None, 24, "fits", ("none", "none", False)),
    ("cpu 16 GB: T5 int8 keeps T5", CPU, None, 16, "needs quantization",
     ("t5:int8", "none", False)),
    ("cpu 12 GB: transformer int8 too", CPU, None, 12, "needs quantization",
     ("t5:int8,transformer:int8", "none", False)),
    ("cpu 10 GB: drop T5, transformer int8", CPU, None, 10, "needs drop-T5",
     ("transformer:int8", "none", True)),
    ("cpu 4 GB: nothing fits", CPU, None, 4, "won't fit", None),
    ("H200: as is", H200, 140, 128, "fits", ("none", "none", False)),
    ("16 GB GPU: T5 int8 on the GPU", RTX3060, 16, 32, "needs quantization",
     ("t5:int8", "none", False)),
    ("12 GB GPU: T5 int8 + model offload before quantizing the transformer", RTX3060, 12, 32,
     "needs quantization", ("t5:int8", "model", False)),
    ("8 GB GPU keeps T5 (was: drop T5)", RTX4060, 8, 32, "needs quantization",
     ("t5:int8", "model", False)),
    ("6 GB GPU: drop T5 + transformer int8 + offload", RTX3060, 6, 32, "needs drop-T5",
     ("transformer:int8", "model", True)),
    ("6 GB GPU, capability 8.9: the transformer in fp8", RTX4060, 6, 32, "needs drop-T5",
     ("transformer:fp8", "model", True)),
    ("4 GB GPU: sequential offload", RTX3060, 4, 32, "needs offload",
     ("none", "sequential", False)),
    ("4 GB GPU, 12 GB RAM: sequential without T5", RTX3060, 4, 12, "needs drop-T5",
     ("none", "sequential", True)),
    ("1 GB GPU: nothing fits", RTX3060, 1, 64, "won't fit", None),
    ("unknown free VRAM: the first plan", H200, None, 64, "fits", ("none", "none", False)),
    ("12 GB GPU, 8 GB RAM: offload has no RAM to hold weights", RTX3060, 12, 8,
     "needs quantization", ("t5:int8,transformer:int8", "none", False)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("machine", "vram", "ram", "verdict", "expected"),
    [case[1:] for case in LADDER],
    ids=[case[0] for case in LADDER],
)
def test_auto_ladder(machine, vram, ram, verdict, expected):
    """SD_QUANT=auto takes the first candidate that fits, in the quality-preserving order."""
    p = plan(machine, vram, ram)
    assert (p.verdict, chosen(p)) == (verdict, expected), p.reason


def test_cuda_ladder_order_and_names():
    """On CUDA the candidates come in the documented order, fp8 at capability ≥ 8.9."""
    names = [c.name for c in plan(H200, 140).candidates]
    assert names == [
        "as is",
        "T5 int8",
        "T5 int8 + model offload",
        "T5 int8 + transformer fp8",
        "T5 int8 + transformer fp8 + model offload",
        "drop T5 + transformer fp8",
        "drop T5 + transformer fp8 + model offload",
        "sequential offload",
        "sequential offload without T5",
    ]
    assert "transformer int8" in plan(RTX3060, 80).candidates[3].name


def test_cpu_ladder_has_no_offload():
    """On a CPU every weight is in RAM already: no offload candidate is offered."""
    p = plan(CPU, None, 64)
    assert [c.offload for c in p.candidates] == ["none"] * 4
    assert [c.name for c in p.candidates] == [
        "as is",
        "T5 int8",
        "T5 int8 + transformer int8",
        "drop T5 + transformer int8",
    ]


def test_without_torchao_the_ladder_is_the_old_one():
    """No torchao: the quantized steps fall back to the old offload / drop-T5 ladder, said so."""
    p = plan(Machine("cuda", capability=(8, 6), torchao=False), 10, 32)
    assert [c.name for c in p.candidates] == [
        "as is",
        "model offload",
        "drop T5",
        "drop T5 + model offload",
        "sequential offload",
        "sequential offload without T5",
    ]
    assert chosen(p) == ("none", "none", True)
    assert p.notes == ("no int8 plans: torchao is not installed",)


def test_apple_gpu_gets_no_int8_plans():
    """On an Apple GPU (unified memory) quantization is not offered; RAM is the budget."""
    p = plan(Machine("mps", "float16"), None, 12)
    assert [c.name for c in p.candidates] == ["as is", "drop T5"]
    assert chosen(p) == ("none", "none", True)
    assert "untried on Apple GPUs" in p.notes[0]


def test_candidate_numbers_and_trades():
    """Each candidate carries its peak, its RAM need and what it gives up."""
    by_name = {c.name: c for c in plan(RTX3060, 12, 32).candidates}
    t5 = by_name["T5 int8"]
    assert t5.peak_bytes / GB == pytest.approx(16.27 - 9.52 + 4.891 + 1.5, abs=0.01)
    assert t5.ram_bytes == 0 and t5.fits is False
    assert "prompt following kept" in t5.trades
    off = by_name["T5 int8 + model offload"]
    assert off.peak_bytes / GB == pytest.approx(4.94 + 1.5, abs=0.01)  # the transformer
    assert off.ram_bytes / GB == pytest.approx(16.27 - 9.52 + 4.891 + 0.8, abs=0.01)
    assert "one at a time" in off.trades
    drop = by_name["drop T5 + transformer int8 + model offload"]
    assert "T5 conditioning" in drop.trades and "pixels change" in drop.trades
    assert by_name["as is"].trades.startswith("nothing")
    assert "much slower" in by_name["sequential offload"].trades


def test_reason_has_the_numbers():
    """The chosen plan's reason shows its predicted peak against free memory."""
    p = plan(CPU, None, 16)
    assert p.reason.startswith(
        "T5 int8: 11.6 GB of bfloat16 weights + 1.5 GB working + 800 MB runtime = 13.9 GB "
        "≤ 16.0 GB free RAM"
    )
    assert p.summary == "offload none · with T5 · quant t5:int8"
    assert plan(RTX3060, 12, 32).reason.count("GB") >= 3
    assert "even sequential offload without T5" in plan(RTX3060, 1, 64).reason


def test_quantized_bytes_from_linear_shares():
    """int8 halves the Linear weights only: T5-XXL 9.52 → 4.89 GB (its embedding stays bf16)."""
    t5 = int(9.52 * GB)
    assert quantized_bytes(t5, "int8", dtype="bfloat16", share=LINEAR_SHARE["text_encoder_3"]) == (
        pytest.approx(4.892 * GB, rel=1e-3)
    )
    assert quantized_bytes(t5, None, dtype="bfloat16", share=0.97) == t5
    tr = int(4.94 * GB)
    assert quantized_bytes(tr, "fp8", dtype="bfloat16", share=LINEAR_SHARE["transformer"]) == (
        pytest.approx(2.698 * GB, rel=1e-3)
    )
    # float32 weights: int8 is a quarter of them; NF4 a little over an eighth.
    assert quantized_bytes(4 * GB, "int8", dtype="float32", share=1.0) == 1 * GB
    assert quantized_bytes(4 * GB, "nf4", dtype="float32", share=1.0) == int(0.5625 * GB)


@pytest.mark.parametrize(
    ("quant", "machine", "words"),
    [
        ("fp8", CPU, "needs a CUDA GPU of compute capability ≥ 8.9"),
        ("fp8", RTX3060, "this GPU has 8.6"),
        ("nf4", CPU, "needs a CUDA GPU"),
        ("nf4", RTX3060, "pip install bitsandbytes"),
        ("int8", Machine("cpu", torchao=False), "needs torchao"),
        ("t5-int8", Machine("mps", "float16"), "not tried on Apple GPUs"),
        ("int4", CPU, "is not one of"),
    ],
)
def test_forced_choice_refused_with_the_reason(quant, machine, words):
    """An SD_QUANT this machine cannot run is refused, saying why and what to use."""
    p = plan(machine, 24 if machine.device == "cuda" else None, 32, quant=quant)
    assert (p.verdict, p.chosen) == ("refused", None)
    assert words in p.reason
    assert refusal(quant, machine) == p.reason


@pytest.mark.parametrize(
    ("quant", "machine", "vram", "expected", "verdict"),
    [
        ("none", CPU, None, ("none", "none", True), "needs drop-T5"),
        ("t5-int8", CPU, None, ("t5:int8", "none", False), "fits"),
        ("int8", RTX3060, 12, ("t5:int8,transformer:int8", "none", False), "fits"),
        ("fp8", RTX4060, 10, ("t5:int8,transformer:fp8", "model", False), "needs offload"),
        ("nf4", Machine("cuda", capability=(8, 6), bitsandbytes=True), 10,
         ("t5:nf4,transformer:nf4", "none", False), "fits"),
        ("none", H200, 140, ("none", "none", False), "fits"),
    ],
)  # fmt: skip
def test_forced_choice_keeps_its_quantization(quant, machine, vram, expected, verdict):
    """A forced SD_QUANT keeps that quantization; only offload and T5 are still chosen."""
    p = plan(machine, vram, 16, quant=quant)
    assert (chosen(p), p.verdict) == (expected, verdict), p.reason
    assert all(set(c.quant.values()) <= {"int8", "fp8", "nf4"} for c in p.candidates)


def test_forced_t5_int8_never_drops_t5():
    """SD_QUANT=t5-int8 keeps T5: when it does not fit, the answer is "won't fit"."""
    p = plan(CPU, None, 12, quant="t5-int8")
    assert [c.name for c in p.candidates] == ["t5-int8"]
    assert p.verdict == "won't fit" and "even t5-int8 needs 13.9 GB" in p.reason


def test_offload_and_drop_settings_filter_the_ladder():
    """SD_OFFLOAD / SD_DROP_T5 keep only matching candidates; offload on a CPU is refused."""
    assert chosen(plan(H200, 140, 128, offload="model")) == ("t5:int8", "model", False)
    assert chosen(plan(H200, 140, 128, drop_t5=True)) == ("transformer:fp8", "none", True)
    assert plan(H200, 140, 128, drop_t5=True).verdict == "fits"
    p = plan(RTX3060, 10, 32, drop_t5=False)
    assert chosen(p) == ("t5:int8", "model", False)
    refused = plan(CPU, None, 64, offload="model")
    assert refused.verdict == "refused" and "Set SD_OFFLOAD=none" in refused.reason
    none = plan(CPU, None, 64, quant="int8", offload="sequential")
    assert none.verdict == "refused"
    mismatch = plan(H200, 140, 128, quant="int8", offload="sequential")
    assert mismatch.verdict == "won't fit" and "no candidate matches" in mismatch.reason


def test_quant_label():
    """The record form names T5 first and says "none" when nothing is quantized."""
    assert quant_label({}) == "none"
    assert quant_label({"transformer": "fp8", "text_encoder_3": "int8"}) == (
        "t5:int8,transformer:fp8"
    )
    assert set(QUANT_CHOICES) == {"auto", "none", "t5-int8", "int8", "fp8", "nf4"}


# Peak RSS measured on the full-size stand-in, CPU, bf16 files loaded as bf16 (memory-mapped):
# as is and drop T5 from NOTES-sd3.md; T5 int8 from `bench.quant_cpu pipeline t5-int8` (1024²).
MEASURED_CPU_PEAK_GB = {("none", False): 16.9, ("none", True): 7.97, ("t5-int8", False): 11.58}


@pytest.mark.parametrize(("quant", "drop"), sorted(MEASURED_CPU_PEAK_GB))
def test_cpu_predictions_are_safe_and_within_15_percent(quant, drop):
    """With mapped weights, each measured plan's prediction is above its peak by ≤ 15 %."""
    mapped = Machine("cpu", mapped_weights=True)
    p = plan(mapped, None, 64, quant=quant, drop_t5=drop)
    measured = MEASURED_CPU_PEAK_GB[(quant, drop)]
    assert measured <= p.chosen.peak_bytes / GB <= measured * 1.15
    # Without that fact every byte of every table counts: higher still, never lower.
    assert plan(CPU, None, 64, quant=quant, drop_t5=drop).chosen.peak_bytes > p.chosen.peak_bytes


def test_sparse_tables_are_only_skipped_on_a_mapped_cpu():
    """A GPU holds whole tables (copied to VRAM): mapped_weights changes nothing there."""
    gpu = plan(Machine("cuda", capability=(9, 0), mapped_weights=True), 140, 128)
    assert gpu.chosen.peak_bytes == plan(H200, 140, 128).chosen.peak_bytes
    cpu = plan(Machine("cpu", mapped_weights=True), None, 64)
    assert cpu.chosen.peak_bytes == plan(CPU, None, 64).chosen.peak_bytes - 716_177_408


# H200 peaks (tools/gpu/2026-12-04-h200.jsonl): all on the GPU, model offload, drop T5.
MEASURED_GPU_PEAK_GB = {
    ("none", False): 17.0,
    ("model", False): 10.96,
    ("none", True): 7.48,
    ("model", True): 5.38,
    ("sequential", False): 1.15,
}


def test_gpu_predictions_stay_on_the_safe_side():
    """The unquantized GPU candidates predict at least the peaks measured on the H200."""
    p = plan(Machine("cuda", capability=(9, 0), torchao=False), 140, 128)
    for c in p.candidates:
        measured = MEASURED_GPU_PEAK_GB.get((c.offload, c.drop_t5))
        if measured is not None:
            assert c.peak_bytes / GB >= measured, c.name


def vae(setting, machine, vram_or_ram, size, **kw):
    cuda = machine.device == "cuda"
    p = plan(machine, vram_or_ram if cuda else None, 64 if cuda else vram_or_ram, **kw)
    return choose_vae_tile(
        setting,
        chosen=p.chosen,
        machine=machine,
        available_bytes=p.available_bytes,
        width=size,
        height=size,
    )


def test_vae_tile_setting_as_number_is_kept():
    """SD_VAE_TILE=256 or 0 is used as set, whatever the memory."""
    assert vae(256, H200, 140, 1024)[0] == 256
    assert vae(0, CPU, 4, 1440) == (0, "SD_VAE_TILE=0: untiled")


@pytest.mark.parametrize(
    ("machine", "free", "size", "tile"),
    [
        (H200, 140, 1440, 0),  # a large GPU: diffusers' own untiled decode
        (Machine("cuda", capability=(8, 9)), 24, 1024, 0),  # 16.3 + 2.5 + 2.4 margin ≤ 24
        (Machine("cuda", capability=(8, 9)), 22, 1440, 512),  # 16.3 + 4.9 + 2.2 > 22
        (CPU, 24, 1024, 0),
        (CPU, 24, 1440, 512),
        (RTX3060, 6, 1440, 512),  # offload: the VAE alone, yet 4.9 GB + 1 GB margin > 6
        (RTX3060, 8, 1440, 0),  # model offload: only the VAE is on the GPU while decoding
    ],
)
def test_vae_tile_auto_decides_both_ways(machine, free, size, tile):
    """SD_VAE_TILE=auto tiles only when the untiled decode would not fit with margin."""
    got, reason = vae("auto", machine, free, size)
    assert got == tile, reason
    assert ("untiled" if tile == 0 else "512-px tiles") in reason


def test_vae_tile_auto_without_facts_tiles():
    """Unknown free memory (or no plan) tiles: the safe side."""
    assert choose_vae_tile(
        "auto", chosen=None, machine=H200, available_bytes=None, width=1024, height=1024
    ) == (512, "free memory unknown: tiles on the safe side")
    seq = plan(RTX3060, 4, 32)
    assert seq.chosen.offload == "sequential"
    assert choose_vae_tile(
        "auto", chosen=seq.chosen, machine=RTX3060, available_bytes=seq.available_bytes,
        width=1024, height=1024,
    )[0] == 0  # fmt: skip


def test_untiled_decode_model_matches_the_measurements():
    """The per-megapixel decode figure covers the H200 (bf16) and CPU (fp32) measurements."""
    assert untiled_decode_bytes(1024, 1024, dtype="bfloat16") / GB >= 2.33
    assert untiled_decode_bytes(1440, 1440, dtype="bfloat16") / GB >= 4.83
    assert untiled_decode_bytes(1024, 1024, dtype="float32") / GB >= 4.55
    assert untiled_decode_bytes(1440, 1440, dtype="float32") / GB >= 8.31


def test_new_modules_import_no_torch():
    """The planner, quantizer, compile and warm-up modules import torch only when used, so
    the Hardware page can show the candidate table without loading torch."""
    from tests.test_imports import _heavy_modules_after

    code = "import core.quant_plan, core.quantize, core.compile, core.warmup\n"
    assert _heavy_modules_after(code) == []


def test_mapped_sparse_tables_never_exceed_the_component():
    """A small model planned with Medium's sparse tables: nothing goes below zero."""
    tiny = dict.fromkeys(("transformer", "text_encoder_3", "vae"), 1_000_000)
    machine = Machine("cpu", "bfloat16", mapped_weights=True)
    p = plan_quantized(tiny, machine=machine, free_vram_bytes=None, free_ram_bytes=64 * GB)
    assert p.chosen.weights_bytes == 1_000_000  # the VAE's; the two mapped tables count 0
