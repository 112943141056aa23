"""This session's recent results: bounded, newest first, PNGs read back from the history."""

from core import recent
from core.generation import GenerationRequest


def _entry(seed: int, *, saved: bool = True) -> recent.RecentEntry:
    return recent.RecentEntry(
        thumbnail=b"thumb",
        facts={"seeds": [seed]},
        form_values={"seed": seed},
        record_ids=(f"id{seed}",) if saved else (None,),
        pngs=None if saved else (b"png%d" % seed,),
    )


def test_strip_keeps_the_newest_entries_only():
    """Adding past the limit drops the oldest; the newest comes first."""
    state: dict = {}
    for seed in range(recent.LIMIT + 3):
        recent.add(state, _entry(seed))
    seeds = [e.facts["seeds"][0] for e in recent.entries(state)]
    assert seeds == list(range(recent.LIMIT + 2, 2, -1))


def test_only_the_newest_unsaved_entries_keep_their_pngs():
    """Entries the history could not save keep full PNGs only in the newest INLINE_LIMIT."""
    state: dict = {}
    for seed in range(5):
        recent.add(state, _entry(seed, saved=False))
    kept = [e.pngs is not None for e in recent.entries(state)]
    assert kept == [True] * recent.INLINE_LIMIT + [False] * (5 - recent.INLINE_LIMIT)


def test_recall_reads_pngs_back_and_marks_missing_ones():
    """Showing an entry again reads each PNG by record id; a gone one gets the placeholder."""
    entry = recent.RecentEntry(
        thumbnail=b"t",
        facts={"seeds": [1, 2]},
        form_values={"seed": 1},
        record_ids=("a", "b"),
    )
    shown = recent.recall(entry, load_png={"a": b"PNG-a"}.get, missing=lambda: b"placeholder")
    assert shown["pngs"] == [b"PNG-a", b"placeholder"]
    assert shown["downloadable"] == [True, False]
    assert shown["recalled"] == entry.id
    assert entry.label == "Seed 1 +1"


def test_a_partly_saved_result_keeps_its_pngs_and_pads_the_ids():
    """When only some images were saved, the entry keeps every PNG and marks the rest unsaved."""
    entry = recent.entry_for(
        {"pngs": [b"a", b"b"], "seeds": [3, 4]},
        request=GenerationRequest(
            prompt="p",
            negative_prompt="",
            seed=3,
            width=512,
            height=512,
            guidance_scale=4.5,
            num_inference_steps=2,
            num_images=2,
        ),
        thumbnail=b"t",
        record_ids=["id3"],
    )
    assert entry.record_ids == ("id3", None)
    assert entry.pngs == (b"a", b"b")
    assert entry.form_values["seed"] == 3 and entry.form_values["randomize_seed"] is False
    shown = recent.recall(entry, load_png={"id3": b"stored"}.get, missing=lambda: b"x")
    assert shown["pngs"] == [b"stored", b"b"]
