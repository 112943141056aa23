"""LoRAs in A1111's `parameters`: `<lora:name:weight>` in the prompt and `Lora hashes`."""

from __future__ import annotations

import pytest

from core.lora import LoraChoice
from core.lora_text import (
    format_lora_hashes,
    match_loras,
    parse_lora_hashes,
    prompt_with_loras,
    split_lora_tags,
)
from core.metadata import build_infotext, parse_parameters

HASH_A = "7c31efdb4eaa2931103975e6689a57f4477b89510b80a34d109e8c444adf5ccb"
HASH_B = "8380a7539f0d00112233445566778899aabbccddeeff00112233445566778899"


@pytest.mark.parametrize("prompt", ["a fox", "", "a fox ", "two\nlines", "a <b> c"])
def test_tags_round_trip_through_the_prompt(prompt):
    """`prompt_with_loras` then `split_lora_tags` gives back the prompt and the choices."""
    loras = [LoraChoice("film", 0.8), LoraChoice("style/grain", 1.0), LoraChoice("neg", -0.5)]
    text = prompt_with_loras(prompt, loras)
    assert split_lora_tags(text) == (prompt, loras)


def test_a1111_tag_forms_are_read():
    """`<lora:name>` is weight 1; `<lora:name:w:te>` takes the first number; tags anywhere."""
    prompt, loras = split_lora_tags("<lora:a> a fox, <lora:b:0.5:0.7> in snow <lora:c:2>")
    assert prompt == "a fox, in snow"
    assert loras == [LoraChoice("a", 1.0), LoraChoice("b", 0.5), LoraChoice("c", 2.0)]


def test_malformed_tags_stay_in_the_prompt():
    text = "x <lora:bad:abc> y <lora:> z <lora:unclosed"
    assert split_lora_tags(text) == (text, [])


def test_hostile_prompts_are_read_in_bounded_time():
    """Many unclosed tags or a huge tag: each end is searched within 200 characters only."""
    text = "<lora:" * 20_000
    assert split_lora_tags(text) == (text, [])
    prompt, loras = split_lora_tags("<lora:" + "x" * 100_000 + ">")
    assert loras == []
    many = "".join(f"<lora:n{i}:1>" for i in range(100))
    assert len(split_lora_tags(many)[1]) == 32  # at most MAX_TAGS are read


def test_lora_hashes_are_written_and_read_like_a1111():
    """`name: 12 hex` joined by ", "; A1111 drops `:` and `,` from names."""
    text = format_lora_hashes([("film", HASH_A), ("a,b", HASH_B)])
    assert text == f"film: {HASH_A[:12]}, ab: {HASH_B[:12]}"
    assert parse_lora_hashes(text) == {"film": HASH_A[:12], "ab": HASH_B[:12]}


def test_bad_hash_entries_are_skipped():
    assert parse_lora_hashes("a: xyz, : 0123456789ab, b, c: 0123456789AB") == {"c": "0123456789ab"}
    assert parse_lora_hashes("a: 0123456789ab, " * 10_000) == {"a": "0123456789ab"}


def test_a_png_infotext_carries_both_and_the_importer_reads_them_back():
    """Written through core.metadata's A1111 writer and read by its parser."""
    loras = [LoraChoice("film", 0.8), LoraChoice("grain", 1.0)]
    infotext = build_infotext(
        prompt=prompt_with_loras("a fox in snow", loras),
        negative_prompt="blurry",
        steps=28,
        sampler="FlowMatchEuler",
        guidance_scale=4.5,
        seed=1,
        width=1024,
        height=1024,
        model="sd3.5-medium",
        extra={"Lora hashes": format_lora_hashes([("film", HASH_A), ("grain", HASH_B)])},
    )
    assert f'Lora hashes: "film: {HASH_A[:12]}, grain: {HASH_B[:12]}"' in infotext
    parsed = parse_parameters(infotext)
    # The import takes the tags out of the prompt and reads the hashes.
    assert parsed.values["prompt"] == "a fox in snow" and list(parsed.loras) == loras
    assert parsed.lora_hashes == {"film": HASH_A[:12], "grain": HASH_B[:12]}
    assert parse_lora_hashes(parsed.extras["Lora hashes"]) == parsed.lora_hashes


def test_import_selects_by_hash_then_by_name_and_says_what_is_missing():
    """As A1111's paste: a matching hash selects the file under its name here; else the
    same name (noted when its hash differs); else missing."""
    wanted = [
        LoraChoice("film", 0.8),  # renamed here: found by hash
        LoraChoice("grain", 1.0),  # same name, another version
        LoraChoice("gone", 0.5),
        LoraChoice("plain", 1.0),  # no hash recorded
    ]
    hashes = {"film": HASH_A[:12], "grain": "0123456789ab"}
    available = {"film-v2": HASH_A, "grain": HASH_B, "plain": HASH_B}
    match = match_loras(wanted, hashes, available)
    assert match.selected == (
        LoraChoice("film-v2", 0.8),
        LoraChoice("grain", 1.0),
        LoraChoice("plain", 1.0),
    )
    assert match.missing == ("gone",)
    assert match.other_version == ("grain",)
