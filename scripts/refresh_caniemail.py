"""Refresh `newsletter/data/caniemail.json` from the `caniemail` npm package (MIT).

    python scripts/refresh_caniemail.py [--version 2.0.2] [--from caniemail.json --licence LICENSE]

It downloads the package with `npm pack` (or reads the files given), keeps the clients the
compatibility check reports on, the newest result of each, the notes those results cite, and how
each feature shows in HTML or CSS, and writes a compact JSON with the data's date and licence.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "newsletter" / "data" / "caniemail.json"

# The clients the check reports on: (column label, family, platform) as caniemail names them.
CLIENTS = (
    ("Gmail web", "gmail", "desktop-webmail"),
    ("Gmail iOS", "gmail", "ios"),
    ("Gmail Android", "gmail", "android"),
    ("Outlook Windows", "outlook", "windows"),
    ("Outlook macOS", "outlook", "macos"),
    ("Outlook.com", "outlook", "outlook-com"),
    ("Apple Mail macOS", "apple-mail", "macos"),
    ("Apple Mail iOS", "apple-mail", "ios"),
    ("Yahoo web", "yahoo", "desktop-webmail"),
)

_WORD = re.compile(r"^[a-z-]+$")
SPECIAL: dict[str, list[list[str]]] = {
    "css-important": [["keyword", "!important"]],
    "css-variables": [["function", "var"]],
    "css-comments": [["css-comment", ""]],
    "css-unit-calc": [["function", "calc"]],
    "css-unit-percent": [["unit", "%"]],
    "css-unit-initial": [["keyword", "initial"]],
    "css-modern-color": [["function", name] for name in ("lch", "oklch", "lab", "oklab")],
    "css-sytem-ui": [["keyword", name] for name in ("system-ui", "ui-serif", "ui-sans-serif", "ui-rounded",
                                                     "ui-monospace")],
    "css-at-media-hover": [["media-feature", "hover"], ["media-feature", "any-hover"]],
    "css-at-media-device-pixel-ratio": [["media-feature", "-webkit-device-pixel-ratio"],
                                        ["media-feature", "-webkit-min-device-pixel-ratio"]],
    "css-pseudo-class-lang": [["pseudo", "lang"]],
    "html-h1-h6": [["element", f"h{level}"] for level in range(1, 7)],
    "html-lists": [["element", name] for name in ("ul", "ol", "dl")],
    "html-semantics": [["element", name] for name in ("article", "aside", "footer", "header", "main", "nav",
                                                      "section", "figure", "figcaption", "time")],
    "html-anchor-links": [["link", "#"]],
    "html-mailto-links": [["link", "mailto:"]],
    "html-meta-color-scheme": [["meta", "color-scheme"]],
    "html-doctype": [["doctype", ""]],
    "html-comments": [["html-comment", ""]],
    "html-address": [["element", "address"]],
    "html-base": [["element", "base"]],
    "html-image-maps": [["element", "map"]],
    "html-svg": [["element", "svg"]],
    "html-srcset": [["attribute", "srcset"], ["attribute", "sizes"]],
    "image-base64": [["image", "base64"]],
    "image-jpg": [["image", "jpg"], ["image", "jpeg"]],
    "image-heif": [["image", "heif"], ["image", "heic"]],
    "image-tiff": [["image", "tif"], ["image", "tiff"]],
}


_BY_PREFIX = (("css-at-media-", "media-feature"), ("css-at-", "at-rule"), ("css-unit-", "unit"),
              ("css-selector-", "selector"), ("image-", "image"))


def matches(slug: str, title: str) -> list[list[str]]:
    """How a feature shows in the finished HTML: a list of [kind, name] that `newsletter.compat` finds."""
    if slug in SPECIAL:
        return SPECIAL[slug]
    for prefix, kind in _BY_PREFIX:
        if slug.startswith(prefix):
            return [[kind, slug.removeprefix(prefix)]]
    if slug.startswith("css-"):
        return _css(slug, title)
    if slug.startswith("html-"):
        return _html(slug, title)
    return []  # AMP, BIMI: not something an HTML body shows


def _css(slug: str, title: str) -> list[list[str]]:
    if slug.startswith(("css-pseudo-class-", "css-pseudo-element-")):
        return [["pseudo", slug.split("-", 3)[3]]]
    if slug.startswith("css-display-"):
        return [["value", f"display:{slug.removeprefix('css-display-')}"]]
    if slug.startswith("css-function-") or slug.endswith("-gradient") or slug in ("css-rgb", "css-rgba"):
        return [["function", title.removesuffix("()")]]
    names = [part.strip() for part in re.split(r",| & ", title)]
    properties = [part for part in names if _WORD.match(part)] or [slug.removeprefix("css-")]
    return [["property", part] for part in properties]


def _html(slug: str, title: str) -> list[list[str]]:
    if slug.startswith(("html-input-", "html-button-")):
        element, kind = slug.removeprefix("html-").split("-", 1)
        return [["element", f"{element}[{kind}]"]]
    if title.endswith(" element"):
        return [["element", title.removesuffix(" element").strip("<>")]]
    if title.endswith(" attribute"):
        return [["attribute", title.removesuffix(" attribute")]]
    return [["element", title.strip("<>")]]


def compact(data: dict[str, Any], licence: str, source: str) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for feature in data["data"]:
        found = matches(feature["slug"], feature["title"])
        if not found:
            continue
        support: dict[str, str] = {}
        cited: set[str] = set()
        for label, family, platform in CLIENTS:
            versions = feature["stats"].get(family, {}).get(platform)
            if not versions:
                continue
            result = str(list(versions.values())[-1])  # the newest test, as caniemail lists them
            support[label] = result
            cited.update(re.findall(r"#(\d+)", result))
        notes = {num: text for num, text in (feature.get("notes_by_num") or {}).items() if num in cited}
        features[feature["slug"]] = {
            "title": feature["title"], "match": found, "support": support, "notes": notes,
        }
    return {
        "source": source,
        "last_update_date": data["last_update_date"],
        "refreshed": dt.date.today().isoformat(),
        "licence": licence,
        "clients": [label for label, _, _ in CLIENTS],
        "features": features,
    }


def from_npm(version: str) -> tuple[dict[str, Any], str]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", f"caniemail@{version}", "--silent"], cwd=tmp, check=True,  # noqa: S603, S607
                       capture_output=True)
        (archive,) = Path(tmp).glob("caniemail-*.tgz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        package = Path(tmp) / "package"
        return (json.loads((package / "data" / "caniemail.json").read_text(encoding="utf-8")),
                (package / "LICENSE").read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--version", default="2.0.2", help="the caniemail npm package version")
    parser.add_argument("--from", dest="source", type=Path, help="a caniemail.json already on disk")
    parser.add_argument("--licence", type=Path, help="its LICENSE file (with --from)")
    args = parser.parse_args()
    if args.source:
        data = json.loads(args.source.read_text(encoding="utf-8"))
        licence = args.licence.read_text(encoding="utf-8") if args.licence else "MIT"
        source = f"caniemail.com data ({args.source.name})"
    else:
        data, licence = from_npm(args.version)
        source = f"caniemail npm package {args.version} (https://www.caniemail.com)"
    out = compact(data, licence, source)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{OUT.relative_to(ROOT)}: {len(out['features'])} features, data of {out['last_update_date']}, "
          f"{OUT.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
