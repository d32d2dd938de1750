import pytest

from newsletter import content, placeholders, render
from newsletter.preview import sample_values

from . import browser

pytestmark = pytest.mark.browser


@pytest.fixture
def filled_html(cfg, sample_issue):
    issue = content.parse(sample_issue, base_url=cfg.newsletter.base_url)
    rendered = render.render(issue, cfg.newsletter, cfg.templates_dir)
    return placeholders.fill(rendered.html, sample_values(cfg.newsletter.base_url, rendered.slug), html_escape=True)


def test_columns_stack_on_phone_and_nothing_overflows(filled_html, tmp_path):
    m = browser.measure(filled_html, 375, tmp_path)
    assert m["inner"] == 375
    assert m["scroll"] <= 375, m
    assert m["wide"] == [], m["wide"]
    header_left, header_right = m["cols"][0], m["cols"][1]
    assert header_right["top"] >= header_left["bottom"] - 1  # stacked
    page = tmp_path / "issue.html"
    page.write_text(filled_html)
    shot = browser.screenshot(page.as_uri(), tmp_path / "issue-375.png", 375, 2400, tmp_path / "p375")
    assert shot.stat().st_size > 10_000


def test_columns_side_by_side_on_desktop(filled_html, tmp_path):
    m = browser.measure(filled_html, 650, tmp_path)
    assert m["inner"] == 650
    assert m["scroll"] <= 650
    for left, right in (m["cols"][0:2], m["cols"][-2:]):
        assert abs(left["top"] - right["top"]) < 1  # same row
        assert right["left"] >= left["right"] - 1
    page = tmp_path / "issue.html"
    page.write_text(filled_html)
    browser.screenshot(page.as_uri(), tmp_path / "issue-650.png", 650, 2400, tmp_path / "p650")
