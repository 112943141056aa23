"""Small layout faults a person notices, measured in a real browser: the demo warning once,
example buttons not cut inside a word, a 10-digit seed with room in its box, the gallery's
filter labels on one line. Shares conftest's Chromium and demo app server in a tab of its own.
"""

from __future__ import annotations

from core.generation import MAX_SEED
from tests.test_e2e_browser import BROWSER_MARKS, new_tab

pytestmark = BROWSER_MARKS

# Measured in the page: each example button's label (cut or wrapped?), and the room the
# seed's digits leave in its box (text width from the input's own font).
GENERATOR = """() => {
  const main = document.querySelector("[data-testid=stMain]");
  const examples = [...main.querySelectorAll("button")]
    .filter(b => (b.getAttribute("data-testid") || "").startsWith("stBaseButton-tertiary"))
    .filter(b => b.getBoundingClientRect().height > 0)  // drawn, not a hidden copy
    .map(b => {
      const p = b.querySelector("p") || b;
      const cut = [b, ...b.querySelectorAll("*")].some(e => e.scrollWidth > e.clientWidth + 1);
      return {text: p.innerText, cut,
              lines: Math.round(p.getBoundingClientRect().height /
                                parseFloat(getComputedStyle(p).lineHeight))};
    });
  const seed = main.querySelector("input[aria-label='Seed']");
  const style = getComputedStyle(seed);
  const context = document.createElement("canvas").getContext("2d");
  context.font = style.font;
  const room = seed.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return {examples, value: seed.value, slack: room - context.measureText(seed.value).width};
}"""

GALLERY = """() => {
  const main = document.querySelector("[data-testid=stMain]");
  const tops = {};
  for (const label of main.querySelectorAll("[data-testid=stWidgetLabel]")) {
    const text = label.innerText.trim();
    if (["Search prompts", "Seed", "Made by"].includes(text))
      tops[text] = label.getBoundingClientRect().top;
  }
  const middle = r => r.top + r.height / 2;
  const input = main.querySelector("input[aria-label='Search prompts']");
  const toggle = [...main.querySelectorAll("label")]
    .find(e => e.innerText.trim() === "This session only");
  return {tops, input: middle(input.getBoundingClientRect()),
          toggle: middle(toggle.getBoundingClientRect())};
}"""


def test_small_layout_faults_are_gone(chromium, demo_app, tmp_path):
    from playwright.sync_api import expect

    with new_tab(chromium, demo_app, tmp_path) as tab:
        tab.page.set_viewport_size({"width": 1400, "height": 1000})
        tab.open()
        page = tab.page
        # The demo model's warning: once on the page (sidebar and main together).
        expect(page.get_by_text("random weights, images are noise")).to_have_count(1)
        seed = page.get_by_test_id("stMain").get_by_label("Seed", exact=True)
        seed.fill(str(MAX_SEED))
        seed.press("Tab")
        tab.settle()
        found = page.evaluate(GENERATOR)
        examples = found["examples"]
        assert len(examples) == 3, examples
        for example in examples:  # whole words, one line, nothing hidden behind "…"
            assert not example["cut"] and example["lines"] == 1, example
            assert not example["text"].endswith("…"), example
        assert found["value"] == str(MAX_SEED)
        assert found["slack"] >= 8, found  # px left beside the 10 digits
        tab.nav("Seed history")
        page.get_by_text("This session only").wait_for()
        page.get_by_label("Search prompts").wait_for()
        page.get_by_role("radio", name="Mine", exact=True).first.wait_for()
        found = page.evaluate(GALLERY)
        tops = found["tops"]
        assert set(tops) == {"Search prompts", "Seed", "Made by"}, tops
        assert max(tops.values()) - min(tops.values()) <= 1, tops
        assert abs(found["toggle"] - found["input"]) <= 3, found
