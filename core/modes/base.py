"""What a generation mode declares: one frozen `Mode` per file in `core.modes`.

A mode is one way of making an image (text-to-image now; image-to-image and inpainting
next). It declares its own request options — each with a kind, a range, a default and
the A1111 infotext name it is written under — and what it changes in a pipeline call.
The request, the prompt cache, history records, PNG metadata, share links and verify
all read these declarations, so a new mode is a new file here, not edits to each of them.

No import of `core.generation` (which imports this): option checks return messages and
the request raises them as `InvalidRequest`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("float", "int", "choice", "text")
MAX_TEXT_OPTION_CHARS = 200  # a "text" option's value (e.g. the SLG values) is short
# Request fields a mode option may not be named after: options share the form's, the share
# link's and the infotext's namespace with them.
RESERVED_NAMES = frozenset(
    {
        "prompt",
        "negative_prompt",
        "seed",
        "randomize_seed",
        "width",
        "height",
        "guidance_scale",
        "steps",
        "num_inference_steps",
        "num_images",
        "mode",
        "family",
        "mode_options",
        "quantization",  # a record's own fact beside the options (core.history.record)
    }
)
MAX_OPTIONS = 32  # options in one request or record (a mode declares a handful)
MAX_OPTIONS_CHARS = 4096  # a stored options JSON; larger is not one this app wrote


@dataclass(frozen=True, kw_only=True)
class ModeOption:
    """One request option of a mode, e.g. image-to-image's strength (float, 0–1, 0.6)."""

    name: str  # key in `GenerationRequest.mode_options`, the form and the share link
    label: str  # for messages and widgets, e.g. "Strength"
    kind: str  # one of KINDS
    default: Any
    infotext: str  # A1111's `parameters` key, e.g. "Denoising strength"
    low: float | None = None  # float / int: the range, both ends included
    high: float | None = None
    choices: tuple[str, ...] = ()  # choice: the valid values
    pipeline_arg: str | None = None  # the pipeline's keyword for it (None: not passed as is)
    # text: reads a value (text from a form, link or infotext) into its one written form,
    # returning (that text, None) or (None, a message naming the valid form).
    parse: Callable[[str], tuple[str | None, str | None]] | None = None
    # Values not written into the A1111 `parameters` (as A1111 leaves out "Mask blur: 0");
    # an option without such values is always written, so an infotext holding its key
    # tells its mode (`core.metadata`).
    unwritten: tuple[Any, ...] = ()
    help: str = ""  # the widget's help text

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind must be one of {KINDS}")
        if (self.kind == "text") != (self.parse is not None):
            raise ValueError(f"option {self.name}: a text option (and only one) has `parse`")
        if self.name in RESERVED_NAMES or not self.name.isidentifier():
            raise ValueError(f"option name {self.name!r} is reserved or not an identifier")
        value, problem = self.check(self.default)
        if problem is not None or value != self.default:
            raise ValueError(f"option {self.name}: default {self.default!r} is not valid")

    def describe(self) -> str:
        """The valid values in words, e.g. "a number in 0–1"."""
        if self.kind == "choice":
            return "one of: " + ", ".join(self.choices)
        if self.kind == "text":
            return f"text as written in an infotext, e.g. {self.default}"
        what = "a number" if self.kind == "float" else "a whole number"
        return f"{what} in {self.low:g}–{self.high:g}"

    def check(self, value: Any) -> tuple[Any, str | None]:
        """Return (the value as its kind, None), or (None, a message naming the valid values).

        Accepts the value itself or its text (a share link or an infotext holds text).
        """
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value, None
            return None, f"{self.label} must be {self.describe()}."
        if self.kind == "text":
            if not isinstance(value, str) or len(value) > MAX_TEXT_OPTION_CHARS:
                return None, f"{self.label} must be text of at most {MAX_TEXT_OPTION_CHARS}."
            return self.parse(value)  # type: ignore[misc]
        if isinstance(value, bool):
            return None, f"{self.label} must be {self.describe()}."
        number: float | None
        if isinstance(value, int | float):
            number = float(value)
        else:
            try:
                number = float(str(value).strip()[:64])
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            return None, f"{self.label} must be {self.describe()}."
        if self.kind == "int":
            if not number.is_integer():
                return None, f"{self.label} must be {self.describe()}."
            number = int(number)
        if not self.low <= number <= self.high:
            return None, f"{self.label} must be {self.describe()}; got {number:g}."
        return number, None

    def text(self, value: Any) -> str:
        """The value as written in an infotext or a link (floats without trailing zeros)."""
        return f"{value:g}" if isinstance(value, float) else str(value)


def _all_steps(request: Any) -> int:
    return int(request.num_inference_steps)


def _no_kwargs(_request: Any) -> dict[str, Any]:
    return {}


def _own_size(_source_size: Any, _options: Mapping[str, Any], _family: Any) -> None:
    return None


def _no_check(_request: Any, _family: Any) -> None:
    return None


INPUTS = ("source", "mask")  # what a mode may need besides the prompt


@dataclass(frozen=True, kw_only=True)
class Mode:
    """One generation mode: its options and how it runs (see the module docstring)."""

    id: str  # stored in records, written in share links (`mode=`), e.g. "txt2img"
    label: str  # e.g. "Text to image"
    remote_task: str  # the Hugging Face inference task, e.g. "text_to_image"
    options: tuple[ModeOption, ...] = ()
    # Denoising steps the pipeline really runs for a request (image-to-image runs
    # steps × strength); progress and estimates count these.
    steps_run: Callable[[Any], int] = _all_steps
    # Pipeline keywords beyond the options' `pipeline_arg`s (e.g. an input image).
    extra_kwargs: Callable[[Any], dict[str, Any]] = _no_kwargs
    # Images the mode works on besides the prompt: "source" (the image to vary, repaint or
    # upscale), "mask" (the area to repaint). A request carries them (`core.sources`).
    inputs: tuple[str, ...] = ()
    # The output size for a source of `size` (None: the request's own width and height):
    # (source size, the validated options, the family) → (width, height); may raise
    # ValueError saying why no size works (e.g. already at the family's largest).
    output_size: Callable[[Any, Mapping[str, Any], Any], tuple[int, int] | None] = _own_size
    # A check of the whole request against its family: (field, message) or None.
    check: Callable[[Any, Any], tuple[str, str] | None] = _no_check
    # What a page says of the mode in one line (e.g. what Vary does).
    summary: str = ""

    def __post_init__(self) -> None:
        names = [o.name for o in self.options]
        keys = [o.infotext.lower() for o in self.options]
        if len(set(names)) != len(names) or len(set(keys)) != len(keys):
            raise ValueError(f"mode {self.id}: option names and infotext keys must be unique")
        if not set(self.inputs) <= set(INPUTS) or ("mask" in self.inputs) > (
            "source" in self.inputs
        ):
            raise ValueError(f"mode {self.id}: inputs are {INPUTS} (a mask needs a source)")

    @property
    def needs_source(self) -> bool:
        return "source" in self.inputs

    def option(self, name: str) -> ModeOption | None:
        return next((o for o in self.options if o.name == name), None)

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def check_options(self, raw: Any) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Validate a request's options: (every option with defaults filled in, problems).

        A problem is (option name, message); an unknown name is one too.
        """
        if not isinstance(raw, Mapping):
            return self.defaults(), [("mode_options", "Mode options must be a mapping.")]
        problems: list[tuple[str, str]] = []
        if len(raw) > MAX_OPTIONS:
            return self.defaults(), [("mode_options", f"More than {MAX_OPTIONS} mode options.")]
        for name in raw:
            if self.option(str(name)) is None:
                known = ", ".join(o.name for o in self.options) or "none"
                problems.append(
                    (
                        str(name)[:40],
                        f"{self.label} has no option {str(name)[:40]!r} (its options: {known}).",
                    )
                )
        values = self.defaults()
        for option in self.options:
            if option.name in raw:
                value, problem = option.check(raw[option.name])
                if problem is None:
                    values[option.name] = value
                else:
                    problems.append((option.name, problem))
        return values, problems

    def effective_steps(self, request: Any) -> int:
        """Denoising steps the pipeline runs for `request`."""
        return self.steps_run(request)

    def pipeline_kwargs(self, request: Any) -> dict[str, Any]:
        """What this mode adds to a pipeline call for `request` (its validated options)."""
        kwargs = {
            o.pipeline_arg: request.mode_options[o.name]
            for o in self.options
            if o.pipeline_arg is not None
        }
        return {**kwargs, **self.extra_kwargs(request)}

    def infotext(self, options: Mapping[str, Any]) -> dict[str, str]:
        """A1111 `parameters` entries for these (validated) options (an option's
        `unwritten` values are left out, as A1111 leaves out a mask blur of 0)."""
        return {
            o.infotext: o.text(options[o.name])
            for o in self.options
            if o.name in options and options[o.name] not in o.unwritten
        }

    def marks(self) -> tuple[str, ...]:
        """The infotext keys this mode always writes: an infotext without one of them was
        not made by this mode."""
        return tuple(o.infotext for o in self.options if not o.unwritten)


def options_json(options: Mapping[str, Any]) -> str:
    """The one way options are written as JSON (records): sorted keys, compact."""
    return json.dumps(dict(options), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_options_json(text: Any) -> dict[str, Any]:
    """Options from stored JSON; ValueError saying why when it is not an object of options."""
    if isinstance(text, Mapping):
        data: Any = dict(text)
    else:
        if not isinstance(text, str) or len(text) > MAX_OPTIONS_CHARS:
            raise ValueError(f"mode options are not JSON text of at most {MAX_OPTIONS_CHARS}")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise ValueError("mode options are not valid JSON") from None
    if not isinstance(data, dict) or len(data) > MAX_OPTIONS:
        raise ValueError(f"mode options must be a JSON object of at most {MAX_OPTIONS} entries")
    return {str(k): v for k, v in data.items()}
