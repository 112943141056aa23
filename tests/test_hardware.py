"""Hardware facts: real CPU/RAM facts here, GPU facts through a small fake of torch.cuda."""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import SimpleNamespace

import psutil
import pytest
import torch

from core.device import choose_device, cpu_has_native_bf16
from core.hardware import gather_facts, hub_facts, memory_plan
from core.memory import GB
from core.settings import load_settings

TOKEN = "hf_SECRETtoken123"


@dataclass
class FakeGpu:
    name: str
    capability: tuple[int, int]
    total: int
    free: int
    allocated: int


class FakeCuda:
    """The torch.cuda functions core.hardware calls, answering for made-up GPUs."""

    def __init__(self, *gpus: FakeGpu) -> None:
        self.gpus = gpus

    def is_available(self) -> bool:
        return bool(self.gpus)

    def device_count(self) -> int:
        return len(self.gpus)

    def get_device_name(self, index: int = 0) -> str:
        return self.gpus[index].name

    def get_device_capability(self, index: int = 0) -> tuple[int, int]:
        return self.gpus[index].capability

    def mem_get_info(self, index: int = 0) -> tuple[int, int]:
        return self.gpus[index].free, self.gpus[index].total

    def memory_allocated(self, index: int = 0) -> int:
        return self.gpus[index].allocated

    def install(self, monkeypatch) -> None:
        for name in (
            "is_available",
            "device_count",
            "get_device_name",
            "get_device_capability",
            "mem_get_info",
            "memory_allocated",
        ):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))


def test_cpu_and_ram_facts_are_this_machine():
    """CPU cores, bf16 support, RAM and versions match what the system itself reports."""
    settings = load_settings(environ={}, secrets={})
    facts = gather_facts(settings)
    assert facts.cpu.logical_cores == os.cpu_count()
    assert facts.cpu.physical_cores == psutil.cpu_count(logical=False)
    assert facts.cpu.native_bf16 == cpu_has_native_bf16()
    assert facts.cpu.model
    assert facts.ram_total_bytes == psutil.virtual_memory().total
    assert 0 < facts.ram_available_bytes <= facts.ram_total_bytes
    assert facts.versions["torch"] == torch.__version__
    assert facts.choice == choose_device(settings.device, settings.dtype)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_no_cuda_gives_no_gpus():
    """Without CUDA there are no GPU facts, no free VRAM, and the device is not cuda."""
    facts = gather_facts(load_settings(environ={}, secrets={}))
    assert facts.gpus == () and facts.cuda_available is False
    assert facts.free_vram_bytes is None
    assert facts.choice.device != "cuda"


def test_fake_gpus_are_reported(monkeypatch):
    """Each GPU's name, capability, total/free VRAM and held memory come from torch.cuda."""
    FakeCuda(
        FakeGpu("NVIDIA GeForce RTX 4090", (8, 9), 24 * GB, 20 * GB, 3 * GB),
        FakeGpu("NVIDIA A100-SXM4-80GB", (8, 0), 80 * GB, 79 * GB, 0),
    ).install(monkeypatch)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    facts = gather_facts(load_settings(environ={}, secrets={}))
    assert facts.cuda_available is True
    assert [(g.index, g.name, g.capability) for g in facts.gpus] == [
        (0, "NVIDIA GeForce RTX 4090", "8.9"),
        (1, "NVIDIA A100-SXM4-80GB", "8.0"),
    ]
    first = facts.gpus[0]
    assert (first.total_bytes, first.free_bytes, first.held_bytes) == (24 * GB, 20 * GB, 3 * GB)
    assert facts.choice.device == "cuda" and facts.choice.dtype == "bfloat16"
    assert facts.free_vram_bytes == 20 * GB


def _fixed_ram(monkeypatch, available_gb: float) -> None:
    """Plans read free RAM: fix it, so the verdict does not hang on the machine's load."""
    ram = SimpleNamespace(total=64 * GB, available=int(available_gb * GB), percent=50.0)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: ram)


def test_plan_from_fake_gpu(monkeypatch):
    """A 24 GB card (compute capability 8.6) with 12 GB free keeps SD3.5 Medium's T5 in int8
    and offloads components (6.4 GB peak), with the numbers; SD_QUANT=none falls back to
    plain model offload (6.9 GB peak, all 17.1 GB of weights in RAM)."""
    FakeCuda(FakeGpu("NVIDIA GeForce RTX 3090", (8, 6), 24 * GB, 12 * GB, 0)).install(monkeypatch)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    _fixed_ram(monkeypatch, 32)
    settings = load_settings(environ={"SD_MODEL": "stabilityai/x"}, secrets={})
    plan = memory_plan(settings, gather_facts(settings))
    assert (plan.verdict, plan.offload, plan.drop_t5) == ("needs quantization", "model", False)
    assert plan.quant_label == "t5:int8" and plan.chosen == "T5 int8 + model offload"
    assert "12.0 GB free VRAM" in plan.reason
    settings = load_settings(environ={"SD_MODEL": "stabilityai/x", "SD_QUANT": "none"}, secrets={})
    plain = memory_plan(settings, gather_facts(settings))
    assert (plain.verdict, plain.offload, plain.quant) == ("needs offload", "model", ())
    assert "17.1 GB of RAM holds the offloaded weights" in plain.reason


def test_demo_plan_judges_the_demo_size(monkeypatch):
    """On the demo model the plan fits anywhere; SD3.5's own plan is available beside it."""
    _fixed_ram(monkeypatch, 24)
    settings = load_settings(environ={}, secrets={})
    facts = gather_facts(settings)
    assert memory_plan(settings, facts).verdict == "fits"
    assert memory_plan(settings, facts, sd35=True).needed_bytes > 10 * GB


def _fake_hub_cache(root, repo: str, payload: bytes):
    """Write a Hugging Face cache entry the way huggingface_hub lays it out."""
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "blobs").mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    (folder / "blobs" / "abc").write_bytes(payload)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").symlink_to(folder / "blobs" / "abc")


def test_hub_cache_found_with_size(tmp_path, monkeypatch):
    """A model in the local HF cache is reported cached, with its size on disk."""
    import huggingface_hub.constants

    _fake_hub_cache(tmp_path, "org/model", b"{}" * 500)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    hub = hub_facts(load_settings(environ={"SD_MODEL": "org/model"}, secrets={}))
    assert hub.cache_dir == str(tmp_path)
    assert (hub.model_kind, hub.cached, hub.cached_bytes, hub.cached_files) == (
        "hub",
        True,
        1000,
        1,
    )
    assert hub.revision == "0" * 40
    missing = hub_facts(load_settings(environ={"SD_MODEL": "org/other"}, secrets={}))
    assert missing.cached is False and "downloads" in missing.note


def test_hub_facts_local_folder_and_token(demo_dir):
    """A local folder reports its size; the token is reported as configured, never shown."""
    settings = load_settings(environ={"SD_MODEL": str(demo_dir), "HF_TOKEN": TOKEN}, secrets={})
    hub = hub_facts(settings)
    assert hub.model_kind == "local folder" and hub.cached_bytes > 0
    assert hub.token_configured is True
    assert "SECRET" not in repr(hub) and "SECRET" not in repr(settings)
