"""Images at their own size, capped at the column: read from a file next to the issue, or written
in the Markdown (`{width=… height=…}`); inline in a sentence, a block on their own."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import html as lxml_html
from PIL import Image

from newsletter import content, placeholders, render
from newsletter.errors import ContentError
from newsletter.preview import sample_values
from newsletter.templates import Templates

from . import browser

BODY = """---
subject: Images
date: 2026-12-01
preheader: Images at their size.
---

Built with ![the icon](icon.png) inside a sentence, and a badge below.

![a badge](badge.png)

![a tall chart](https://cdn.example.com/chart.png){width=600 height=1200}

![a remote photo](https://cdn.example.com/photo.jpg)
"""


def write_issue(folder: Path, body: str = BODY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), "red").save(folder / "icon.png")
    Image.new("RGB", (120, 40), "blue").save(folder / "badge.png")
    path = folder / "2026-12-01.md"
    path.write_text(body, encoding="utf-8")
    return path


def render_issue(cfg, path: Path) -> render.Rendered:
    return render.render(content.load(path, cfg.newsletter), cfg.newsletter, Templates(cfg.templates_dir))


def images(rendered: render.Rendered) -> dict[str, lxml_html.HtmlElement]:
    doc = lxml_html.document_fromstring(rendered.html)
    return {img.get("alt"): img for img in doc.xpath("//img") if img.get("alt")}


def test_each_image_is_drawn_at_its_own_size_capped_at_the_column(cfg, tmp_path):
    rendered = render_issue(cfg, write_issue(tmp_path / "issues"))
    found = images(rendered)
    sizes = {alt: (img.get("width"), img.get("height")) for alt, img in found.items()}
    assert sizes == {"the icon": ("32", "32"), "a badge": ("120", "40"), "a tall chart": ("528", "1056"),
                     "a remote photo": ("528", None)}, sizes
    assert "display:block" not in found["the icon"].get("style").replace(" ", "")  # it stays in its sentence
    assert "display:block" in found["a badge"].get("style").replace(" ", "")
    assert "max-width:120px" in found["a badge"].get("style").replace(" ", "")
    (warning,) = [w for w in rendered.warnings if "photo.jpg" in w]
    assert warning.startswith(f"{tmp_path / 'issues' / '2026-12-01.md'}:13: image ") and "{width=" in warning
    assert not [w for w in rendered.warnings if "icon.png" in w or "chart.png" in w]


@pytest.mark.parametrize(("attributes", "problem"), [
    ("{width=120}", "width and height"),
    ("{width=abc height=40}", "width"),
    ("{width=0 height=40}", "width"),
    ("{width=120 height=40 style=x}", "style"),
    ("{.hero}", "class"),
])
def test_a_bad_size_or_another_attribute_is_an_error_naming_the_line(cfg, tmp_path, attributes, problem):
    path = write_issue(tmp_path / "issues", BODY.replace("{width=600 height=1200}", attributes))
    with pytest.raises(ContentError) as caught:
        content.load(path, cfg.newsletter)
    message = str(caught.value)
    assert message.startswith(f"{path}:11: ") and problem in message and "\n" not in message, message


def test_a_file_next_to_the_issue_that_is_no_image_is_an_error_naming_it(cfg, tmp_path):
    path = write_issue(tmp_path / "issues")
    (tmp_path / "issues" / "badge.png").write_text("not a picture")
    with pytest.raises(ContentError) as caught:
        content.load(path, cfg.newsletter)
    assert str(caught.value).startswith(f"{path}:9: ") and "badge.png" in str(caught.value)


def test_the_sample_issue_sizes_its_image(cfg):
    from .conftest import ROOT

    rendered = render_issue(cfg, ROOT / "issues" / "2026-12-01.md")
    assert not [w for w in rendered.warnings if "image" in w]


@pytest.mark.browser
@pytest.mark.parametrize("width", [375, 650])
def test_chromium_draws_each_image_at_its_size_and_the_tall_one_at_the_column(cfg, tmp_path, width):
    folder = tmp_path / "issues"
    path = write_issue(folder)
    Image.new("RGB", (600, 1200), "green").save(folder / "chart.png")
    Image.new("RGB", (2000, 1000), "gray").save(folder / "photo.jpg")
    rendered = render_issue(cfg, path)
    html = placeholders.fill(rendered.html, sample_values(cfg.newsletter.base_url, rendered.slug), html_escape=True)
    # Every image from the folder, so that the browser loads them.
    html = html.replace(cfg.newsletter.base_url.rstrip("/") + "/", folder.as_uri() + "/")
    html = html.replace("https://cdn.example.com/", folder.as_uri() + "/")
    m = browser.measure(html, width, tmp_path)
    icon, badge, chart, photo = [box for box in m["images"] if box["width"]][-4:]
    assert (round(icon["width"]), round(icon["height"])) == (32, 32), icon
    assert (round(badge["width"]), round(badge["height"])) == (120, 40), badge
    if width == 650:
        assert abs(chart["width"] - 528) <= 1, chart
    else:  # the card fills the phone's screen, less its margins and padding
        assert width - 90 <= chart["width"] <= width - 40, chart
    assert abs(chart["height"] - 2 * chart["width"]) <= 2, chart
    assert abs(photo["width"] - chart["width"]) <= 1, (photo, chart)
    assert icon["top"] < badge["top"] and icon["left"] > badge["left"] + 40  # in its sentence, after words
    assert m["scroll"] <= width
