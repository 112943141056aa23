"""The history record: one stored image and everything needed to make it again.

Also the facts a record keeps about the environment that made it, and the check that a
record read back from storage is still a valid generator request (rows are outside
input: an edited database or another app version sharing it may hold anything).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from core import metadata
from core.auth import LOCAL_USER
from core.demo import DEMO_MODEL
from core.generation import (
    AppliedStyle,
    GenerationRequest,
    InvalidRequest,
    LoraChoice,
    lora_name_problem,
    lora_weight_problem,
)
from core.models import DEFAULT_FAMILY, DEMO, FAMILIES, UnknownFamily, get_family
from core.modes import DEFAULT_MODE, UnknownMode, get_mode, options_json, parse_options_json
from core.safe_text import public_model_name
from core.sources import ImageInput, valid_record_id

# The latest time a record may hold: the end of year 9999, the last a date can show.
MAX_TIME = 253_402_300_799.0
_SHA256 = re.compile(r"[0-9a-f]{64}")
# How the weights were quantized (`core.quantize.QuantFacts.label`) rides in the options
# JSON beside the mode's options, under a name no option may take (`core.modes.base`): a
# fact of the record, not of the request, kept without a column of its own. Absent: "none"
# (every record from before quantization was made unquantized). Longer text is not ours.
QUANTIZATION_KEY = "quantization"
UNQUANTIZED = "none"
MAX_QUANTIZATION_CHARS = 200


def valid_id(value: object) -> bool:
    """Whether `value` is a record id this app could have made (safe in a file name): a
    file or zip entry is only ever named from an id like this, so an edited row cannot
    point outside the history's folders (`core.sources.RECORD_ID`)."""
    return valid_record_id(value)


def readable_time(value: object) -> float:
    """A stored time as a number a date can be drawn from; 0.0 when it is not one.

    Rows are outside input: NULL, text, NaN, infinities and times before 1970 or after
    the year 9999 all read as 0.0 ("unknown"), so no page or export raises on them.
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if math.isfinite(number) and 0.0 < number <= MAX_TIME else 0.0


def _shown(value: object) -> str:
    """A stored value in a problem message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


@dataclass(frozen=True, kw_only=True)
class HistoryRecord:
    """One stored image and everything needed to make it again."""

    id: str
    created_at: float  # Unix time, UTC
    session_id: str
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    model: str
    model_revision: str
    scheduler: str
    device: str
    dtype: str
    torch_version: str
    diffusers_version: str
    transformers_version: str
    backend: str
    duration_seconds: float
    image_sha256: str = ""  # of the RGB pixels, so it survives any lossless re-encode
    owner: str = LOCAL_USER  # the signed-in email who made it; LOCAL_USER without sign-in
    # The model family (core.models id), the generation mode (core.modes id) and that
    # mode's options as JSON (`core.modes.options_json`), as the request had them.
    family: str = DEFAULT_FAMILY.id
    mode: str = DEFAULT_MODE.id
    mode_options: str = "{}"
    # What Vary / Inpaint / Upscale worked on (migration 0005; "" for text to image): the
    # record whose image was the source, or else the SHA-256 of the source's own PNG bytes
    # (an upload), and of the inpaint mask's; the history keeps those bytes once each.
    source_record: str = ""
    source_sha256: str = ""
    mask_sha256: str = ""
    # 0006 (issue 19): the LoRAs it was made with, as applied (JSON list of {"name",
    # "weight", "sha256"}), the styles merged into its prompt (JSON list of {"name",
    # "prompt", "negative_prompt"}), and the X/Y grid it is a cell of ("" when none;
    # `grid_cell` its index there, row-major).
    loras: str = "[]"
    styles: str = "[]"
    grid_id: str = ""
    grid_cell: int = 0

    def lora_entries(self) -> list[dict[str, Any]]:
        """The stored LoRAs as [{"name", "weight", "sha256"}]; `InvalidRequest` when the
        column is not such a list."""
        return parse_loras_json(self.loras)

    def applied_styles(self) -> tuple[AppliedStyle, ...]:
        """The stored styles; `InvalidRequest` when the column is not such a list."""
        return parse_styles_json(self.styles)

    def options(self) -> dict[str, Any]:
        """The stored mode options; `InvalidRequest` when they are not a JSON object."""
        try:
            options = parse_options_json(self.mode_options)
        except ValueError as exc:
            raise InvalidRequest("mode_options", f"This record's {exc}.") from None
        options.pop(QUANTIZATION_KEY, None)  # the record's fact, not a request option
        return options

    @property
    def quantization(self) -> str:
        """How the model that made this image was quantized: "none", or e.g.
        "t5:int8-weight-only(torchao 0.18.0)" (`core.quantize.QuantFacts.label`). A value
        that is not text of a sane length reads "?" (rows are outside input)."""
        try:
            value = parse_options_json(self.mode_options).get(QUANTIZATION_KEY, UNQUANTIZED)
        except ValueError:
            return UNQUANTIZED
        if not isinstance(value, str) or not 0 < len(value) <= MAX_QUANTIZATION_CHARS:
            return "?"
        return value

    def request(
        self, *, source: ImageInput | None = None, mask: ImageInput | None = None
    ) -> GenerationRequest:
        """The one-image request that reproduces this record (its family, mode and options).

        A mode that works on an image needs its `source` (and Inpaint its `mask`), read back
        from the history (`core.history.inputs.record_request`); without them the request
        holds the settings only (`inputs_pending`), for checking and for the form.
        Raises `core.generation.InvalidRequest` when a stored value is out of range; call
        `problems()` first to show why.
        """
        return GenerationRequest(
            source=source,
            mask=mask,
            inputs_pending=source is None,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            width=self.width,
            height=self.height,
            guidance_scale=self.guidance_scale,
            num_inference_steps=self.steps,
            num_images=1,
            family=self.family,
            mode=self.mode,
            mode_options=self.options(),
            loras=tuple(LoraChoice(e["name"], e["weight"]) for e in self.lora_entries()),
            styles=self.applied_styles(),
        )

    def form_values(self) -> dict[str, Any]:
        """The generator form's fields (`core.form.field_names()`) for this record: the
        mode and its options too (none when they cannot be read: see `problems()`), and
        the LoRAs. Not the styles: they are in the prompt already."""
        try:
            options = self.options()
        except InvalidRequest:
            options = {}
        try:
            loras = [(e["name"], e["weight"]) for e in self.lora_entries()]
        except InvalidRequest:
            loras = []
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "randomize_seed": False,
            "width": self.width,
            "height": self.height,
            "guidance_scale": self.guidance_scale,
            "steps": self.steps,
            "num_images": 1,
            **options,
            "mode": self.mode,
            "loras": loras,
        }

    def problems(self) -> list[str]:
        """What makes this record unusable as generator settings ([] when it is usable).

        A known family and mode first, then the same checks as a shared link or an
        imported PNG (`core.share.check_values`, with the record's family's sizes), then the
        request's own checks (e.g. sizes must be multiples of 16, the mode's options).
        """
        from core.share import check_values

        try:
            family = get_family(self.family)
            get_mode(self.mode)
            self.options()
            self.lora_entries()
            self.applied_styles()
        except (UnknownFamily, UnknownMode, InvalidRequest) as exc:
            return [str(exc)]
        _, warnings = check_values(self.form_values(), family=family)
        if warnings:
            return warnings
        try:
            self.request()
        except InvalidRequest as exc:
            return [str(exc)]
        return self.input_problems()

    def input_problems(self) -> list[str]:
        """What is wrong with the record's references to its source and mask ([] if fine):
        the mode's images must be named (by a record id or a SHA-256), and nothing else."""
        try:
            needs = get_mode(self.mode).inputs
        except UnknownMode as exc:
            return [str(exc)]
        found = []
        if self.source_record and not valid_id(self.source_record):
            found.append(f"source_record {_shown(self.source_record)} is not a record id")
        for name in ("source_sha256", "mask_sha256"):
            value = getattr(self, name)
            if value and not _SHA256.fullmatch(value):
                found.append(f"{name} {_shown(value)} is not a SHA-256")
        if self.source_record and self.source_sha256:
            found.append("the source is named twice (a record and its own bytes)")
        has_source = bool(self.source_record or self.source_sha256)
        if "source" in needs and not has_source:
            found.append(f"this {self.mode} record names no source image")
        if "mask" in needs and not self.mask_sha256:
            found.append(f"this {self.mode} record names no mask")
        if "source" not in needs and (has_source or self.mask_sha256):
            found.append(f"a {self.mode} record names no source or mask images")
        if "mask" not in needs and "source" in needs and self.mask_sha256:
            found.append(f"a {self.mode} record names no mask")
        return found

    def _mode_infotext(self) -> dict[str, str]:
        """The mode's A1111 entries (none for txt2img, or when the row's are unusable)."""
        try:
            mode = get_mode(self.mode)
            options, problems = mode.check_options(self.options())
        except (UnknownMode, InvalidRequest):
            return {}
        return {} if problems else mode.infotext(options)

    def _lora_infotext(self) -> tuple[str, dict[str, str]]:
        """The prompt with A1111's `<lora:name:weight>` tags, and its `Lora hashes` (the
        prompt alone when the row's LoRAs are unusable)."""
        from core.lora_text import format_lora_hashes, prompt_with_loras

        try:
            entries = self.lora_entries()
        except InvalidRequest:
            return self.prompt, {}
        choices = [LoraChoice(e["name"], e["weight"]) for e in entries]
        hashes = [(e["name"], e["sha256"]) for e in entries if e["sha256"]]
        extra = {"Lora hashes": format_lora_hashes(hashes)} if hashes else {}
        return prompt_with_loras(self.prompt, choices), extra

    def _styles_infotext(self) -> dict[str, str]:
        try:
            names = [style.name for style in self.applied_styles()]
        except InvalidRequest:
            return {}
        return {"Styles": ", ".join(names)} if names else {}

    def infotext(self) -> str:
        """A1111 `parameters` text for this record (the mode's options under their A1111
        names, e.g. "Denoising strength"; LoRAs as A1111 writes them: `<lora:name:weight>`
        in the prompt and `Lora hashes`)."""
        prompt, lora_fields = self._lora_infotext()
        return metadata.build_infotext(
            prompt=prompt,
            negative_prompt=self.negative_prompt,
            steps=self.steps,
            sampler=self.scheduler,
            guidance_scale=self.guidance_scale,
            seed=self.seed,
            width=self.width,
            height=self.height,
            model=self.model,
            extra={
                **self._mode_infotext(),
                **lora_fields,
                **self._styles_infotext(),
                "Model revision": self.model_revision,
                "Device": self.device,
                "Dtype": self.dtype,
                "Quantization": "" if self.quantization == UNQUANTIZED else self.quantization,
                "Version": f"diffusers {self.diffusers_version}",
            },
        )

    def to_json(self) -> str:
        """The record as JSON (the PNG's `sd35-dashboard` chunk): the mode options as an
        object when they parse, else as the text stored."""
        data = dataclasses.asdict(self)
        with contextlib.suppress(ValueError):
            data["mode_options"] = parse_options_json(self.mode_options)
        for name in ("loras", "styles"):
            with contextlib.suppress(ValueError, RecursionError):
                data[name] = json.loads(getattr(self, name))
        return json.dumps(data, ensure_ascii=False, sort_keys=True)

    def stored_problems(self) -> list[str]:
        """What in this record is not what this app writes ([] for a sound record).

        Every column is checked, as input is: the id, the time, the duration, the image
        hash and the owner here, the generator settings by `problems()`. A record read
        from an edited or damaged database is still listed, shown and exported, with
        these words beside it.
        """
        found = []
        if not valid_id(self.id):
            found.append(f"id {_shown(self.id)} is not a record id this app makes")
        if readable_time(self.created_at) == 0.0:
            found.append("created_at is missing or not a time from 1970 to 9999")
        duration = self.duration_seconds
        if not isinstance(duration, float | int) or not 0 <= duration < math.inf:
            found.append(f"duration_seconds {_shown(duration)} is not a duration")
        if self.image_sha256 and not _SHA256.fullmatch(self.image_sha256):
            found.append(f"image_sha256 {_shown(self.image_sha256)} is not a SHA-256")
        if not self.owner:
            found.append("owner is empty")
        if self.quantization == "?":
            found.append("quantization (in mode_options) is not text this app writes")
        return found + self.problems()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> HistoryRecord:
        """A record from a stored row or JSON, whatever it holds.

        Text fields become text ("" for NULL) and numbers numbers: the time is 0.0 when
        it is not a readable time (`readable_time`), the duration 0.0 when it is not a
        number, so any row can be listed, shown and exported; the generator values (seed,
        size, steps, guidance, family, mode and options) are kept as stored.
        `stored_problems()` says what was wrong, `problems()` whether the settings can be
        used. Data from before families and modes (a PNG's JSON chunk) gets what migration
        0003 gives such rows: the demo family for the demo, else SD3.5 Medium, text to
        image, no options.
        """
        values = {}
        for name, kind in _KINDS.items():
            value = data.get(name)
            if value is None and name in _BEFORE_MODES:
                value = _BEFORE_MODES[name](data)
            elif value is None and name in _BEFORE_GRIDS:
                value = _BEFORE_GRIDS[name]
            elif name == "mode_options" and isinstance(value, Mapping):
                try:  # a JSON chunk holds them as an object
                    value = options_json(value)
                except (TypeError, ValueError):
                    value = str(value)
            elif name in ("loras", "styles") and isinstance(value, list):
                try:  # a JSON chunk holds them as a list
                    value = json.dumps(value, ensure_ascii=False)
                except (TypeError, ValueError):
                    value = str(value)
            if kind is str:
                value = "" if value is None else str(value)
            elif name == "created_at":
                value = readable_time(value)
            elif name == "duration_seconds":
                try:
                    value = float(value)
                except (TypeError, ValueError, OverflowError):
                    value = 0.0
            values[name] = value
        return cls(**values)


FIELDS = tuple(f.name for f in dataclasses.fields(HistoryRecord))
MAX_LIST_JSON_CHARS = 200_000  # a record's LoRAs or styles as JSON (16 styles of 10,000)


def _json_list(text: str, what: str) -> list[Any]:
    if not isinstance(text, str) or len(text) > MAX_LIST_JSON_CHARS:
        raise InvalidRequest(what, f"This record's {what} are not readable.")
    try:
        value = json.loads(text or "[]")
    except (ValueError, RecursionError):
        raise InvalidRequest(what, f"This record's {what} are not valid JSON.") from None
    if not isinstance(value, list):
        raise InvalidRequest(what, f"This record's {what} are not a JSON list.")
    return value


def parse_loras_json(text: str) -> list[dict[str, Any]]:
    """A record's `loras` column as [{"name", "weight", "sha256"}], each checked like a
    request's LoRA; `InvalidRequest` naming what is wrong."""
    entries = []
    for item in _json_list(text, "loras"):
        if not isinstance(item, Mapping):
            raise InvalidRequest("loras", "This record's loras hold something not a LoRA.")
        name, weight, sha = item.get("name"), item.get("weight"), item.get("sha256", "")
        problem = lora_name_problem(name) or lora_weight_problem(weight)
        if problem is None and not (isinstance(sha, str) and (not sha or _SHA256.fullmatch(sha))):
            problem = "its hash is not a SHA-256"
        if problem:
            shown = _shown(name)
            raise InvalidRequest("loras", f"This record's LoRA {shown}: {problem}.")
        entries.append({"name": name, "weight": float(weight), "sha256": sha})
    return entries


def parse_styles_json(text: str) -> tuple[AppliedStyle, ...]:
    """A record's `styles` column as the applied styles; `InvalidRequest` when it is not
    such a list (each style is then checked by the request)."""
    styles = []
    for item in _json_list(text, "styles"):
        if not isinstance(item, Mapping):
            raise InvalidRequest("styles", "This record's styles hold something not a style.")
        values = [item.get(k, "") for k in ("name", "prompt", "negative_prompt")]
        if not all(isinstance(v, str) for v in values):
            raise InvalidRequest("styles", "This record's styles hold something not text.")
        styles.append(AppliedStyle(*values))
    return tuple(styles)


# What a row or JSON from before families and modes holds for them (migration 0003).
def _family_before_modes(data: Mapping[str, Any]) -> str:
    model = str(data.get("model") or "").lower()
    if model == DEMO_MODEL:
        return DEMO.id
    return next((f.id for f in FAMILIES if model in f.hub_ids), DEFAULT_FAMILY.id)


_BEFORE_MODES = {
    "family": _family_before_modes,
    "mode": lambda _data: DEFAULT_MODE.id,
    "mode_options": lambda _data: "{}",
}
# What a row or JSON from before LoRAs, styles and grids holds for them (migration 0006).
_BEFORE_GRIDS = {"loras": "[]", "styles": "[]", "grid_id": "", "grid_cell": 0}
_KINDS = {
    f.name: {"str": str, "float": float, "int": int}[str(f.type)]
    for f in dataclasses.fields(HistoryRecord)
}
FACT_KEYS = (
    "model",
    "model_revision",
    "scheduler",
    "device",
    "dtype",
    "torch_version",
    "diffusers_version",
    "transformers_version",
    "backend",
)


def input_fields(request: GenerationRequest) -> dict[str, str]:
    """How a record names its request's source and mask: the source record's id when the
    source is one, else the SHA-256 of its own bytes; the mask's SHA-256."""
    source, mask = request.source, request.mask
    return {
        "source_record": source.record_id or "" if source is not None else "",
        "source_sha256": source.sha256 if source is not None and not source.record_id else "",
        "mask_sha256": mask.sha256 if mask is not None else "",
    }


def new_record(
    request: GenerationRequest,
    *,
    seed: int,
    facts: Mapping[str, str],
    session_id: str,
    duration_seconds: float,
    created_at: float | None = None,
    owner: str = LOCAL_USER,
    loras: Sequence[tuple[str, str, float]] = (),
    grid: tuple[str, int] | None = None,
) -> HistoryRecord:
    """The record of one image of `request` made with `seed` in environment `facts`
    (`environment`: its "quantization" goes into the options JSON when not "none").

    `loras` are the LoRAs as applied (name, A1111 sha256, weight; the result says); a
    request's LoRAs not among them are kept without a hash. `grid` is (grid id, cell
    index) for a cell of an X/Y grid.
    """
    applied = {name: (sha, weight) for name, sha, weight in loras}
    entries = [
        {"name": c.name, "weight": c.weight, "sha256": applied.get(c.name, ("", 0.0))[0]}
        for c in request.loras
    ]
    styles = [dataclasses.asdict(style) for style in request.styles]
    grid_id, grid_cell = grid if grid is not None else ("", 0)
    options = dict(request.mode_options)
    quantization = str(facts.get(QUANTIZATION_KEY) or UNQUANTIZED)
    if quantization != UNQUANTIZED:
        options[QUANTIZATION_KEY] = quantization
    return HistoryRecord(
        owner=owner,
        id=uuid.uuid4().hex,
        created_at=time.time() if created_at is None else created_at,
        session_id=session_id,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=seed,
        width=request.width,
        height=request.height,
        steps=request.num_inference_steps,
        guidance_scale=float(request.guidance_scale),
        family=request.family,
        mode=request.mode,
        mode_options=options_json(options),
        **input_fields(request),
        loras=json.dumps(entries, ensure_ascii=False),
        styles=json.dumps(styles, ensure_ascii=False),
        grid_id=grid_id,
        grid_cell=grid_cell,
        duration_seconds=float(duration_seconds),
        **{key: str(facts.get(key, "")) for key in FACT_KEYS},
    )


# --- facts about the running environment ----------------------------------------------------
def package_version(name: str) -> str:
    """Installed version of a distribution, read without importing it ("" when absent)."""
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return ""


def model_revision(model: str) -> str:
    """Say exactly which weights `model` names.

    "demo" for the demo; for a local folder "local:" plus a SHA-256 over its
    model_index.json and every component's config; for a Hub id the commit hash of
    the cached snapshot (`refs/main`) or "unknown" when nothing is cached.
    """
    if model == DEMO_MODEL:
        return DEMO_MODEL
    path = Path(model).expanduser()
    if path.is_dir():
        digest = hashlib.sha256()
        configs = [path / "model_index.json", *sorted(path.glob("*/*config.json"))]
        for config in configs:
            if config.is_file():
                digest.update(config.relative_to(path).as_posix().encode())
                digest.update(config.read_bytes())
        return f"local:{digest.hexdigest()[:16]}"
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        ref = Path(HF_HUB_CACHE) / f"models--{model.replace('/', '--')}" / "refs" / "main"
        return ref.read_text().strip() or "unknown"
    except (OSError, ImportError):
        return "unknown"


def environment(backend: Any) -> dict[str, str]:
    """Facts a record keeps about how images are made now, from a `core.generation.Backend`
    (loaded, so that the device, dtype and scheduler are known)."""
    facts = backend.describe()
    loaded = backend.loaded_facts
    model = facts.model
    revision = model_revision(model) if model else ""
    if facts.backend == "remote":  # which service made it: an endpoint or a provider
        revision = "remote " + (facts.endpoint or f"provider {facts.provider}")
    return {
        # A local folder by its name: anyone who downloads the image reads this.
        "model": public_model_name(model),
        "model_revision": revision,
        "scheduler": loaded.scheduler if loaded is not None else "",
        "device": facts.device,
        "dtype": facts.dtype,
        "torch_version": package_version("torch"),
        "diffusers_version": package_version("diffusers"),
        "transformers_version": package_version("transformers"),
        "backend": facts.backend,
        # A remote service's weights are its own business: "none" as far as we know.
        QUANTIZATION_KEY: loaded.quantization if loaded is not None else UNQUANTIZED,
    }


_ENVIRONMENT_LABELS = {
    "model": "model",
    "model_revision": "model revision",
    "scheduler": "scheduler",
    "device": "device",
    "dtype": "dtype",
    "torch_version": "torch",
    "diffusers_version": "diffusers",
    "transformers_version": "transformers",
}


def environment_differences(record: HistoryRecord, now: Mapping[str, str]) -> list[str]:
    """Name what differs between the record's environment and `now` (see `environment`).

    A record's model folder is compared (and named) by its folder name, as images are
    recorded now: one saved before that rule kept the server's path, which is the same model.
    """
    recorded = {key: getattr(record, key) for key in _ENVIRONMENT_LABELS}
    if recorded["model"]:
        recorded["model"] = public_model_name(recorded["model"])
    return [
        f"{label}: recorded {recorded[key] or '?'}, now {now.get(key) or '?'}"
        for key, label in _ENVIRONMENT_LABELS.items()
        if now.get(key) and recorded[key] != now.get(key)
    ]


def format_time(timestamp: float) -> str:
    """A record's Unix time as readable UTC, e.g. "2026-11-26 10:48:18 UTC".

    Never raises: a time that is not one (see `readable_time`) reads "unknown".
    """
    if readable_time(timestamp) == 0.0:
        return "unknown (not a valid time)"
    moment = datetime.datetime.fromtimestamp(float(timestamp), tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def session_id(state: Any) -> str:
    """This browser session's id, kept in `st.session_state` (made on first use)."""
    if "history_session_id" not in state:
        state["history_session_id"] = uuid.uuid4().hex
    return state["history_session_id"]
