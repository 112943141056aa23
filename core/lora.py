"""LoRAs for the SD3 family: find them, read them safely, check that they fit, apply per request.

- **Files**: `.safetensors` only, from one folder (the `SD_LORA_DIR` setting). Pickled
  checkpoints (`.ckpt`, `.pt`, `.pth`, `.bin`, …) are refused by name and by content: loading
  one runs code. Nothing here calls `torch.load`, and diffusers is never handed a path (its
  loader falls back to pickle when a safetensors read fails): it gets the tensors in memory.
- **Reading**: the 8-byte header length and the JSON header are checked (caps below) before
  anything else is read; then the tensors are read once, and hashed and loaded from those
  same bytes. Every tensor must be float and fit the module it names in the loaded pipeline
  (a LoRA for another architecture is refused naming the file, before the pipeline is touched).
- **Hash** as A1111 (`extensions-builtin/Lora/network.py` `NetworkOnDisk`: for `.safetensors`
  `hashes.sha256(..., use_addnet_hash=True)`, i.e. `modules/hashes.py`
  `addnet_hash_safetensors`, the sha256 of the bytes after the header; `shorthash` its first
  12 hex): the value civitai lists as the LoRA's AutoV3 hash and A1111 writes in
  `Lora hashes: "name: <12 hex>"`. It survives edits of the header's metadata.
- **Applying**: `applied_loras(pipe, loras)` loads them as PEFT adapters, weights them, yields,
  and unloads them (`unload_lora_weights`) whatever happens, so the next request runs on the
  model exactly as loaded (bit-identical pixels, measured in the tests). Use it inside the
  generation slot (`core.queue`): the pipeline is shared.
- **Infotext** (`<lora:name:weight>`, `Lora hashes`): `core.lora_text`.

Torch, diffusers and PEFT are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The choice, its limits and its checks live with the request (core.generation); the
# `as` names are re-exported here, where LoRA code looks for them.
from core.generation import LORA_WEIGHT_MAX as LORA_WEIGHT_MAX
from core.generation import LORA_WEIGHT_MIN as LORA_WEIGHT_MIN
from core.generation import MAX_LORAS as MAX_LORAS
from core.generation import GenerationError, lora_name_problem, lora_weight_problem
from core.generation import LoraChoice as LoraChoice
from core.safe_text import quote

log = logging.getLogger(__name__)

SUFFIX = ".safetensors"
# Pickle formats: refused by name. The content check below also catches them renamed.
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
MAX_LORA_BYTES = 2 * 2**30  # SD3.5 LoRAs are 10 MB–1.3 GB; bigger is not a LoRA
# safetensors' own cap is 100 MB; kohya metadata (tag frequencies, cover images) stays far
# below 32 MiB, and the JSON parse is linear in it.
MAX_HEADER_BYTES = 32 * 2**20
MAX_TENSORS = 20_000  # a rank-r LoRA of every SD3.5 Large linear layer has ~2,000
MAX_RANK = 4096
MAX_FILES = 1000  # listed from the folder
MAX_DEPTH = 4  # subfolders searched below it
SHORT_HASH_CHARS = 12
COMPONENTS = ("transformer", "text_encoder", "text_encoder_2")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
ADAPTER_PREFIX = "sd_lora_"
_ITEM_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
_FLOAT_DTYPES = ("F32", "F16", "BF16")  # what LoRA weights are stored in
_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_B.bias")


class LoraError(GenerationError):
    """A LoRA cannot be used; the message names the file and says why."""


def check_weight(weight: float, *, name: str = "") -> float:
    """Return `weight` as a float in LORA_WEIGHT_MIN–LORA_WEIGHT_MAX; raise `LoraError`."""
    problem = lora_weight_problem(weight)
    if problem:
        raise LoraError(f"LoRA {quote(name)}: {problem}.")
    return float(weight)


# --- finding files ------------------------------------------------------------------------
@dataclass(frozen=True)
class LoraFile:
    """A `.safetensors` file in the LoRA folder (not read yet)."""

    name: str  # path below the folder without the suffix, "/"-separated: "style/film-grain"
    path: Path
    size: int


@dataclass(frozen=True)
class RefusedFile:
    name: str
    path: Path
    reason: str


@dataclass(frozen=True)
class Found:
    """What `discover_loras` saw: usable files, refused ones with why, and whether it stopped
    at MAX_FILES."""

    files: tuple[LoraFile, ...] = ()
    refused: tuple[RefusedFile, ...] = ()
    truncated: bool = False

    def by_name(self) -> dict[str, LoraFile]:
        return {f.name: f for f in self.files}


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a LoRA name, or None."""
    return lora_name_problem(name)


def discover_loras(
    folder: str | Path,
    *,
    max_files: int = MAX_FILES,
    max_depth: int = MAX_DEPTH,
    max_bytes: int = MAX_LORA_BYTES,
) -> Found:
    """List the LoRA files under `folder` (sorted by name); nothing is opened.

    `.safetensors` files are listed; pickled checkpoints and files over `max_bytes` are
    listed as refused with the reason; anything else is ignored. Hidden entries and
    symbolic links to folders are skipped. A missing folder gives an empty result.
    """
    root = Path(folder).expanduser()
    files: list[LoraFile] = []
    refused: list[RefusedFile] = []
    truncated = False
    pending: list[tuple[Path, int]] = [(root, 0)]
    while pending and not truncated:
        directory, depth = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue  # missing or unreadable: nothing to list there
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if depth < max_depth:
                    pending.append((path, depth + 1))
                continue
            suffix = path.suffix.lower()
            if suffix != SUFFIX and suffix not in PICKLE_SUFFIXES:
                continue
            if len(files) + len(refused) >= max_files:
                truncated = True
                break
            name = path.relative_to(root).with_suffix("").as_posix()
            if suffix in PICKLE_SUFFIXES:
                refused.append(RefusedFile(name, path, pickle_refusal(suffix)))
                continue
            try:
                size = entry.stat().st_size
            except OSError:
                continue
            problem = name_problem(name) or size_problem(size, max_bytes)
            if problem is None and name.lower().endswith(SUFFIX):
                # A name ending in .safetensors is a Hub id (core.lora_hub).
                problem = "its name ends in .safetensors twice; rename it"
            if problem:
                refused.append(RefusedFile(name, path, problem))
            else:
                files.append(LoraFile(name=name, path=path, size=size))
    files.sort(key=lambda f: f.name.lower())
    refused.sort(key=lambda f: f.name.lower())
    return Found(tuple(files), tuple(refused), truncated)


def pickle_refusal(suffix: str) -> str:
    return (
        f"a pickled checkpoint ({suffix}): refused, because loading one can run any code. "
        "Use the .safetensors version of this LoRA (most LoRA pages offer one)"
    )


def size_problem(size: int, max_bytes: int) -> str | None:
    if size > max_bytes:
        return (
            f"{size / 1e9:.1f} GB; LoRA files over {max_bytes / 1e9:.1f} GB are refused "
            "(a LoRA is much smaller: is this a whole model?)"
        )
    return None


# --- the safetensors header ---------------------------------------------------------------
@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int  # byte offsets in the data block (after the header)
    end: int


@dataclass(frozen=True)
class Header:
    """A checked safetensors header: tensors, `__metadata__`, where the data starts."""

    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]
    data_start: int  # 8 + header length
    size: int  # of the whole file


def _looks_pickled(head: bytes) -> str | None:
    if head.startswith(b"PK\x03\x04"):
        return "a pickled PyTorch checkpoint (a zip archive) with a .safetensors name"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle with a .safetensors name"
    return None


def label_of(name: str) -> str:
    """A LoRA's file name for messages: a folder name plus `.safetensors`; a Hub id as is."""
    return name if name.lower().endswith(SUFFIX) else f"{name}{SUFFIX}"


def _file_error(label: str, why: str) -> LoraError:
    return LoraError(f"LoRA {quote(label)} cannot be used: {why}.")


def header_length(head: bytes, size: int, *, label: str, max_header_bytes: int) -> int:
    """Read and check the 8-byte little-endian header length of a safetensors file."""
    if size < 8 or len(head) < 8:
        raise _file_error(label, f"it is {size} bytes, too short for a safetensors file")
    pickled = _looks_pickled(head)
    if pickled:
        raise _file_error(label, f"it is {pickled}; refused, because loading it could run code")
    length = int.from_bytes(head[:8], "little")
    if length > max_header_bytes:
        raise _file_error(
            label,
            f"its header claims {length:,} bytes; at most {max_header_bytes:,} are read "
            "(a damaged file, or not safetensors)",
        )
    if 8 + length > size:
        raise _file_error(
            label,
            f"its header claims {length:,} bytes but the file has {size:,}: it is cut short "
            "or not safetensors",
        )
    if length < 2:
        raise _file_error(label, "its header is empty (not a safetensors file)")
    return length


def parse_header(raw: bytes, *, size: int, label: str) -> Header:
    """Check the JSON header `raw` (the bytes after the length) of a file of `size` bytes."""
    data_size = size - 8 - len(raw)
    try:
        text = raw.decode("utf-8")
        if not text.startswith("{"):
            raise ValueError("not a JSON object")
        parsed = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _file_error(label, f"its header is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(parsed, dict):
        raise _file_error(label, "its header is not a JSON object")
    metadata = parsed.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _file_error(label, "its __metadata__ is not a map of text to text")
    if len(parsed) > MAX_TENSORS:
        raise _file_error(label, f"it holds {len(parsed):,} tensors; at most {MAX_TENSORS:,}")
    tensors: dict[str, TensorInfo] = {}
    for name, info in parsed.items():
        tensors[name] = _tensor_info(name, info, label)
    spans = sorted((t.start, t.end, n) for n, t in tensors.items())
    at = 0
    for start, end, name in spans:
        if start != at:
            raise _file_error(label, f"tensor {quote(name, 60)} overlaps or leaves a gap")
        at = end
    if at != data_size:
        raise _file_error(
            label,
            f"its tensors need {at:,} bytes of data but the file holds {data_size:,}: it is "
            "cut short or damaged",
        )
    return Header(tensors=tensors, metadata=metadata, data_start=8 + len(raw), size=size)


def _tensor_info(name: str, info: Any, label: str) -> TensorInfo:
    shown = quote(name, 60)
    if not isinstance(info, dict):
        raise _file_error(label, f"tensor {shown} has no description")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in _ITEM_SIZES:
        raise _file_error(label, f"tensor {shown} has an unknown dtype {quote(dtype, 20)}")
    if (
        not isinstance(shape, list)
        or len(shape) > 8
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise _file_error(label, f"tensor {shown} has an invalid shape")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise _file_error(label, f"tensor {shown} has invalid data offsets")
    numel = math.prod(shape)
    if numel * _ITEM_SIZES[dtype] != offsets[1] - offsets[0]:
        raise _file_error(label, f"tensor {shown}'s shape does not match its byte size")
    return TensorInfo(dtype, tuple(shape), offsets[0], offsets[1])


def read_header(
    path: str | Path,
    *,
    label: str = "",
    max_bytes: int = MAX_LORA_BYTES,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> Header:
    """Read and check only the header of a safetensors file (nothing else is read)."""
    path = Path(path)
    label = label or path.name
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        problem = size_problem(size, max_bytes)
        if problem:
            raise _file_error(label, f"it is {problem}")
        length = header_length(handle.read(8), size, label=label, max_header_bytes=max_header_bytes)
        return parse_header(handle.read(length), size=size, label=label)


def addnet_hash(path: str | Path, *, max_bytes: int = MAX_LORA_BYTES) -> str:
    """A1111's hash of a `.safetensors` LoRA: sha256 of the bytes after the header (hex)."""
    path = Path(path)
    header = read_header(path, max_bytes=max_bytes)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(header.data_start)
        while chunk := handle.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def short_hash(sha256: str) -> str:
    """The 12 hex characters A1111 writes in `Lora hashes`."""
    return sha256[:SHORT_HASH_CHARS]


# --- reading the weights ------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LoraWeights:
    """A LoRA file read and checked: tensors on the CPU, its hash, what it adapts."""

    name: str
    path: str
    sha256: str  # A1111's (addnet) hash: sha256 of the tensor bytes
    state_dict: Mapping[str, Any] = field(repr=False)
    adapter_metadata: Mapping[str, Any] | None = field(repr=False, default=None)
    components: frozenset[str] = frozenset()
    nbytes: int = 0

    @property
    def short_hash(self) -> str:
        return short_hash(self.sha256)

    @property
    def label(self) -> str:
        """How messages name it: "style/film-grain.safetensors" (a Hub LoRA's name, the id
        `owner/repo/file.safetensors`, carries the suffix already)."""
        return label_of(self.name)

    @property
    def touches_text_encoders(self) -> bool:
        """True when it changes the CLIP encoders: then cached prompt embeddings do not apply."""
        return bool(self.components & set(TEXT_ENCODERS))


def _adapter_metadata(metadata: Mapping[str, str], label: str) -> dict[str, Any] | None:
    """diffusers' `lora_adapter_metadata` (the PEFT config: rank, alpha, …), if present."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        raise _file_error(label, "its lora_adapter_metadata is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise _file_error(label, "its lora_adapter_metadata is not a JSON object")
    if any(k.endswith(".use_dora") and v for k, v in parsed.items()):
        raise _file_error(label, "it is a DoRA, which diffusers does not load for SD3")
    return parsed


def read_lora(
    path: str | Path,
    *,
    name: str = "",
    max_bytes: int = MAX_LORA_BYTES,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> LoraWeights:
    """Read a `.safetensors` LoRA once: check its header, hash its data, build its tensors.

    The bytes hashed are the bytes loaded (one read, no second open). Raise `LoraError`
    naming the file for a pickle, a wrong suffix, a cut-short or lying file, non-float
    tensors or keys that are not a diffusers SD3 LoRA's.
    """
    import torch

    path = Path(path)
    label = label_of(name) if name else path.name
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise _file_error(label, f"it is {pickle_refusal(suffix)}")
    if suffix != SUFFIX:
        raise _file_error(label, "only .safetensors files are read")
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            problem = size_problem(size, max_bytes)
            if problem:
                raise _file_error(label, f"it is {problem}")
            length = header_length(
                handle.read(8), size, label=label, max_header_bytes=max_header_bytes
            )
            header = parse_header(handle.read(length), size=size, label=label)
            data = bytearray(size - header.data_start)
            got = handle.readinto(data)
    except OSError as exc:
        raise _file_error(label, f"it cannot be read ({type(exc).__name__})") from exc
    if got != len(data):
        raise _file_error(label, "it changed or was cut short while being read")
    keys_problem = _key_problem(header.tensors)
    if keys_problem:
        raise _file_error(label, keys_problem)
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    state_dict: dict[str, Any] = {}
    view = memoryview(data)
    for key, info in header.tensors.items():
        if info.dtype not in _FLOAT_DTYPES:
            raise _file_error(label, f"tensor {quote(key, 60)} is {info.dtype}, not float")
        chunk = view[info.start : info.end]
        tensor = torch.frombuffer(chunk, dtype=dtypes[info.dtype]) if len(chunk) else None
        if tensor is None:
            tensor = torch.empty(0, dtype=dtypes[info.dtype])
        # A copy: the tensor must not keep the whole file's buffer alive, and the buffer
        # offset need not be aligned for the dtype.
        state_dict[key] = tensor.reshape(info.shape).clone()
    sha256 = hashlib.sha256(view).hexdigest()
    view.release()
    del data
    return LoraWeights(
        name=name or path.stem,
        path=str(path),
        sha256=sha256,
        state_dict=state_dict,
        adapter_metadata=_adapter_metadata(header.metadata, label),
        components=frozenset(k.split(".", 1)[0] for k in state_dict),
        nbytes=sum(t.numel() * t.element_size() for t in state_dict.values()),
    )


def _key_problem(tensors: Mapping[str, TensorInfo]) -> str | None:
    """Why these keys are not a diffusers-format SD3 LoRA (checked before reading data)."""
    if not tensors:
        return "it holds no tensors"
    keys = list(tensors)
    first = keys[0]
    if any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        return (
            "it is in the kohya/A1111 key format (lora_unet_…), which diffusers does not load "
            "for SD3; use a diffusers-format SD3 LoRA (keys transformer.…lora_A.weight)"
        )
    if any(k.startswith("unet.") for k in keys):
        return "it is a LoRA for a UNet model (SD 1.5 / SDXL), not for SD3"
    if any("dora_scale" in k for k in keys):
        return "it is a DoRA, which diffusers does not load for SD3"
    odd = [k for k in keys if k.split(".", 1)[0] not in COMPONENTS or not k.endswith(_SUFFIXES)]
    if odd:
        return (
            f"{len(odd)} of {len(keys)} keys are not SD3 LoRA keys (e.g. {quote(odd[0], 70)}; "
            f"expected transformer.….lora_A.weight): a LoRA for another model, or another "
            f"format (first key {quote(first, 70)})"
        )
    return None


# --- does it fit this pipeline? -----------------------------------------------------------
def _module_for(modules: Mapping[str, Any], component: str, path: str) -> Any:
    module = modules.get(path)
    if module is None and component in TEXT_ENCODERS:
        # diffusers strips or tolerates the `text_model.` prefix for CLIP encoders.
        module = modules.get(f"text_model.{path}") or modules.get(path.removeprefix("text_model."))
    return module


def check_fits(pipe: Any, weights: LoraWeights) -> None:
    """Raise `LoraError` unless every tensor names a Linear layer of `pipe` with the right shape.

    Run before the pipeline is touched: a LoRA for another architecture (SD 1.5, SDXL,
    Flux, another SD3 size) or with a wrong rank is refused naming the file.
    """
    import torch

    label = weights.label
    pairs: dict[tuple[str, str], dict[str, tuple[int, ...]]] = {}
    for key, tensor in weights.state_dict.items():
        component, rest = key.split(".", 1)
        suffix = next(s for s in _SUFFIXES if rest.endswith(s))
        pairs.setdefault((component, rest[: -len(suffix)]), {})[suffix] = tuple(tensor.shape)
    missing: list[str] = []
    wrong: list[str] = []
    cache: dict[str, Mapping[str, Any]] = {}
    for (component, path), shapes in pairs.items():
        model = getattr(pipe, component, None)
        if model is None:
            raise _file_error(label, f"it adapts {component}, which this pipeline does not have")
        if component not in cache:
            cache[component] = dict(model.named_modules())
        module = _module_for(cache[component], component, path)
        if not isinstance(module, torch.nn.Linear):
            missing.append(f"{component}.{path}")
            continue
        a, b = shapes.get(".lora_A.weight"), shapes.get(".lora_B.weight")
        bias = shapes.get(".lora_B.bias")
        rank = a[0] if a and len(a) == 2 else -1
        ok = (
            a is not None
            and b is not None
            and 1 <= rank <= MAX_RANK
            and a == (rank, module.in_features)
            and b == (module.out_features, rank)
            and (bias is None or bias == (module.out_features,))
        )
        if not ok:
            wrong.append(
                f"{component}.{path} (A {a}, B {b}; the layer is "
                f"{module.in_features}→{module.out_features})"
            )
    if missing:
        raise _file_error(
            label,
            f"{len(missing)} of {len(pairs)} layers it adapts do not exist in this model "
            f"(e.g. {quote(missing[0], 70)}): a LoRA for another model or another SD3 size",
        )
    if wrong:
        raise _file_error(
            label,
            f"{len(wrong)} of {len(pairs)} layers have shapes that do not fit this model "
            f"(e.g. {quote(wrong[0], 120)}): a LoRA for another SD3 size, or damaged",
        )


# --- applying for one request -------------------------------------------------------------
@dataclass(frozen=True)
class AppliedLoras:
    """What `applied_loras` put on the pipeline for this request."""

    loras: tuple[tuple[str, str, float], ...] = ()  # (name, A1111 sha256, weight)
    touches_text_encoders: bool = False
    load_seconds: float = 0.0

    @property
    def cache_tag(self) -> str:
        """Part of a prompt-cache key when the CLIP encoders are adapted ("" otherwise)."""
        if not self.touches_text_encoders:
            return ""
        return ";".join(f"{short_hash(h)}:{w:g}" for _, h, w in self.loras)


def has_adapters(pipe: Any) -> bool:
    """Whether any PEFT layer is still wrapped around a module of the pipeline."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for component in COMPONENTS:
        model = getattr(pipe, component, None)
        if model is not None and any(isinstance(m, BaseTunerLayer) for m in model.modules()):
            return True
    return False


def adapter_bytes(pipe: Any) -> dict[str, int]:
    """Bytes of each adapter now on the pipeline (its lora_A/lora_B tensors), for the
    Hardware page while a request holds LoRAs."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    sizes: dict[str, int] = {}
    for component in COMPONENTS:
        model = getattr(pipe, component, None)
        if model is None:
            continue
        for module in model.modules():
            if not isinstance(module, BaseTunerLayer):
                continue
            for attribute in ("lora_A", "lora_B"):
                for adapter, layer in getattr(module, attribute, {}).items():
                    tensors = [*layer.parameters(), *layer.buffers()]
                    sizes[adapter] = sizes.get(adapter, 0) + sum(
                        t.numel() * t.element_size() for t in tensors
                    )
    return sizes


def remove_loras(pipe: Any) -> None:
    """Take every adapter off the pipeline; the modules are the loaded model's again."""
    if has_adapters(pipe):
        pipe.unload_lora_weights()
    if has_adapters(pipe):  # never seen; a leftover would leak into someone else's image
        raise RuntimeError("LoRA layers are still on the pipeline after unload_lora_weights")


def _load(pipe: Any, weights: LoraWeights, adapter: str) -> None:
    """What `load_lora_weights` does with a state dict, plus the file's adapter metadata
    (rank, alpha) that diffusers only reads when it opens the file itself."""
    state_dict = dict(weights.state_dict)  # diffusers pops from what it is given
    metadata = dict(weights.adapter_metadata) if weights.adapter_metadata else None
    if "transformer" in weights.components:
        pipe.load_lora_into_transformer(
            state_dict,
            transformer=pipe.transformer,
            adapter_name=adapter,
            metadata=metadata,
            _pipeline=pipe,
        )
    for component in TEXT_ENCODERS:
        if component in weights.components:
            pipe.load_lora_into_text_encoder(
                state_dict,
                network_alphas=None,
                text_encoder=getattr(pipe, component),
                prefix=component,
                lora_scale=pipe.lora_scale,
                adapter_name=adapter,
                metadata=metadata,
                _pipeline=pipe,
            )


@contextmanager
def applied_loras(pipe: Any, loras: Sequence[tuple[LoraWeights, float]]) -> Iterator[AppliedLoras]:
    """Put `loras` (weights, weight) on `pipe` for the block; take them off after, always.

    Call it while holding the generation slot. Every LoRA is checked against the pipeline
    before the first is loaded; a failure while loading, a stop or any error in the block
    leaves the pipeline without adapters (`unload_lora_weights`): the next request gets the
    model's own pixels, bit for bit.
    """
    if not loras:
        yield AppliedLoras()
        return
    if len(loras) > MAX_LORAS:
        raise LoraError(f"{len(loras)} LoRAs chosen; at most {MAX_LORAS} per image.")
    for weights, weight in loras:
        check_weight(weight, name=weights.name)
        check_fits(pipe, weights)
    if has_adapters(pipe):
        log.error("LoRA adapters were left on the pipeline by an earlier request; removing them")
        remove_loras(pipe)
    start = time.perf_counter()
    names = [f"{ADAPTER_PREFIX}{i}" for i in range(len(loras))]
    try:
        for adapter, (weights, _weight) in zip(names, loras, strict=True):
            try:
                _load(pipe, weights, adapter)
            except (ValueError, RuntimeError, KeyError, TypeError) as exc:
                raise _file_error(
                    weights.label, f"diffusers could not load it ({quote(exc, 160)})"
                ) from exc
        pipe.set_adapters(names, [float(w) for _, w in loras])
        yield AppliedLoras(
            loras=tuple((w.name, w.sha256, float(x)) for w, x in loras),
            touches_text_encoders=any(w.touches_text_encoders for w, _ in loras),
            load_seconds=time.perf_counter() - start,
        )
    finally:
        remove_loras(pipe)


class LoraCache:
    """Checked LoRA files kept in CPU memory, least recently used dropped past `max_bytes`.

    A grid varying a LoRA's weight reads its file once, not once per cell. Keyed by path,
    size and modification time, so a replaced file is read again. Thread-safe.
    """

    def __init__(self, max_bytes: int = 2 * 2**30) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int, int], LoraWeights] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, file: LoraFile, **limits: int) -> LoraWeights:
        try:
            stat = file.path.stat()
        except OSError as exc:
            raise _file_error(label_of(file.name), f"it is gone ({type(exc).__name__})") from exc
        key = (str(file.path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        weights = read_lora(file.path, name=file.name, **limits)
        with self._lock:
            self._entries[key] = weights
            while sum(w.nbytes for w in self._entries.values()) > self.max_bytes:
                if len(self._entries) == 1:
                    break
                self._entries.popitem(last=False)
        return weights

    def entries(self) -> list[tuple[str, int]]:
        """(name, bytes) of each LoRA held, for the Hardware page."""
        with self._lock:
            return [(w.name, w.nbytes) for w in self._entries.values()]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
