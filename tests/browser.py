"""Headless Chromium helpers for tests: screenshots and measurements taken from the page itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--mute-audio",
]


def chromium() -> str:
    """The Chromium binary; in CI its absence is a failure, elsewhere a visible skip."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
    pytest.skip("chromium not installed (apt-get install chromium)")


def run(args: list[str], profile: Path, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


ATTEMPTS = 3  # a headless browser start can fail for reasons of its own; the page is not at fault


def screenshot(url: str, out: Path, width: int, height: int, profile: Path) -> Path:
    for _ in range(ATTEMPTS):
        run([f"--window-size={width},{height}", f"--screenshot={out}", url], profile)
        if out.exists() and out.stat().st_size > 0:
            return out
    raise AssertionError(f"no screenshot at {out}")


MEASURE = """
<script>
(function () {
  function box(e) {
    var r = e.getBoundingClientRect();
    return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height};
  }
  var cards = Array.prototype.map.call(document.querySelectorAll('.card'), box);
  var wide = [];
  Array.prototype.forEach.call(document.querySelectorAll('body *'), function (e) {
    var r = e.getBoundingClientRect();
    if (r.width > 0 && r.height > 0 && r.right > window.innerWidth + 0.5)
      wide.push(e.tagName + ' ' + Math.round(r.right));
  });
  // Words a line break cut in two: a word whose box is two rectangles.
  var split = [];
  Array.prototype.forEach.call(document.querySelectorAll('td, th'), function (cell) {
    if (cell.querySelector('td, th')) return;  // a layout cell: its inner cells are looked at themselves
    var walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT), node;
    while ((node = walker.nextNode())) {
      var words = /[A-Za-z0-9]+/g, match;
      while ((match = words.exec(node.data))) {
        var range = document.createRange();
        range.setStart(node, match.index); range.setEnd(node, match.index + match[0].length);
        if (range.getClientRects().length > 1) split.push(match[0]);
      }
    }
  });
  function style(selector, property) {
    var e = document.querySelector(selector);
    return e ? getComputedStyle(e)[property] : null;
  }
  var unsubscribe = document.querySelector('.unsubscribe a');
  var card = document.querySelector('.card > table > tbody > tr > td');
  var text = document.querySelector('.content p');
  parent.postMessage(JSON.stringify({
    inner: window.innerWidth, scroll: document.documentElement.scrollWidth, cards: cards, wide: wide, split: split,
    unsubscribe: unsubscribe ? box(unsubscribe) : null,
    card_background: card ? getComputedStyle(card).backgroundColor : null,
    text_color: text ? getComputedStyle(text).color : null,
    cell_border: style('.content table:not([role]) td', 'borderTopColor'),
    date_color: style('.meta div', 'color'), footer_color: style('.footer div', 'color'),
    images: Array.prototype.map.call(document.querySelectorAll('img'), box),
    tables: Array.prototype.map.call(document.querySelectorAll('.content table:not([role])'), box)}), '*');
})();
</script>
"""

# Chromium's headless window is never narrower than 500 px, so the page is measured inside an
# iframe of the wanted width: its media queries see the iframe's width as the viewport.
FRAME = """<!doctype html><html><body style="margin:0">
<iframe src="{src}" style="width:{width}px;height:900px;border:0"></iframe>
<script>
window.addEventListener('message', function (event) {{
  var out = document.createElement('pre'); out.id = 'measurement'; out.textContent = event.data;
  document.body.appendChild(out);
}});
</script></body></html>"""


def measure(html: str, width: int, workdir: Path, *, dark: bool = False) -> dict:
    """Load `html` at `width` px (in dark mode if asked) and return what the page measured of its own layout."""
    page = workdir / f"measure-{width}.html"
    page.write_text(html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    frame = workdir / f"frame-{width}.html"
    frame.write_text(FRAME.format(src=page.name, width=width), encoding="utf-8")
    for _ in range(ATTEMPTS):
        result = run(
            ["--window-size=1024,900", "--virtual-time-budget=5000", "--allow-file-access-from-files",
             *(["--blink-settings=preferredColorScheme=0"] if dark else []), "--dump-dom", frame.as_uri()],
            workdir / f"profile-{width}-{dark}",
        )
        start = result.stdout.find('<pre id="measurement">')
        if start >= 0:
            break
    assert start >= 0, f"no measurement from chromium: {result.stderr[-500:]}"
    raw = result.stdout[start + len('<pre id="measurement">'):].split("</pre>")[0]
    return json.loads(raw.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


def webdriver(tmp_path: Path, width: int = 390, height: int = 900):
    """Selenium driving Debian's chromium through Debian's chromedriver (nothing is downloaded)."""
    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        if os.environ.get("CI"):
            pytest.fail("chromedriver is not installed; .ci/run installs Debian's chromium-driver package")
        pytest.skip("chromedriver not installed (apt-get install chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver as wd
    from selenium.webdriver.chrome.service import Service

    options = wd.ChromeOptions()
    options.binary_location = chromium()
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={tmp_path / 'selenium-profile'}")
    return wd.Chrome(service=Service(driver_path), options=options)


def heading_becomes(driver, text: str) -> None:
    """Wait for the page after a click: a click returns before the next page has loaded.

    The heading is read in one script call: finding the element and then asking for its text is
    two calls, and a page replaced between them fails with "Node with given id does not belong to
    the document", which is no stale-element error that a wait could ignore.
    """
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(lambda d: text in d.execute_script(
        "const h = document.querySelector('h1'); return h ? h.textContent : '';"))


def text_appears(driver, text: str) -> None:
    """Wait until the page (the one after a click, once loaded) says `text`, read in one script call."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(lambda d: text in d.execute_script("return document.body.textContent"))
