import itertools

import pytest

from newsletter import content, placeholders, render
from newsletter.preview import sample_values
from newsletter.templates import Templates

from . import browser

pytestmark = pytest.mark.browser


@pytest.fixture
def filled_html(cfg, sample_issue):
    issue = content.parse(sample_issue, base_url=cfg.newsletter.base_url)
    rendered = render.render(issue, cfg.newsletter, Templates(cfg.templates_dir))
    return placeholders.fill(rendered.html, sample_values(cfg.newsletter.base_url, rendered.slug), html_escape=True)


def test_on_a_phone_cards_fill_the_screen_nothing_overflows_and_unsubscribe_is_finger_sized(filled_html, tmp_path):
    m = browser.measure(filled_html, 375, tmp_path)
    assert m["inner"] == 375
    assert m["scroll"] <= 375, m
    assert m["wide"] == [], m["wide"]
    assert len(m["cards"]) == 7  # the header with the intro, then one card per "##" item
    for card in m["cards"]:
        assert card["left"] >= 8 and card["right"] <= 375 - 8 and card["width"] >= 375 - 2 * 16, card
    tops = [card["top"] for card in m["cards"]]
    assert tops == sorted(tops)
    # A finger needs about 44 px (Apple's guideline); the link used to be a 67 x 14 px target.
    assert m["unsubscribe"]["height"] >= 40 and m["unsubscribe"]["width"] >= 88, m["unsubscribe"]
    for image in m["images"]:
        assert image["right"] <= 375 - 8, image
    page = tmp_path / "issue.html"
    page.write_text(filled_html)
    shot = browser.screenshot(page.as_uri(), tmp_path / "issue-375.png", 375, 2400, tmp_path / "p375")
    assert shot.stat().st_size > 10_000


@pytest.mark.parametrize("width", [650, 1024])
def test_on_a_desktop_the_issue_is_a_centred_column_of_cards(filled_html, tmp_path, width):
    m = browser.measure(filled_html, width, tmp_path)
    assert m["inner"] == width
    assert m["scroll"] <= width
    lefts = {round(card["left"]) for card in m["cards"]}
    widths = {round(card["width"]) for card in m["cards"]}
    assert widths == {576} and len(lefts) == 1, (lefts, widths)  # 600 px body, 12 px margins
    (left,) = lefts
    assert abs(left - (width - 576) / 2) <= 1  # centred
    for above, below in itertools.pairwise(m["cards"]):
        assert below["top"] - above["bottom"] >= 8  # cards stand apart


def test_dark_mode_turns_cards_and_text_dark_and_light(filled_html, tmp_path):
    light = browser.measure(filled_html, 650, tmp_path)
    dark = browser.measure(filled_html, 650, tmp_path, dark=True)
    assert light["card_background"] == "rgb(255, 255, 255)"
    assert dark["card_background"] == "rgb(22, 27, 34)"
    assert dark["text_color"] == "rgb(230, 237, 243)" != light["text_color"]
