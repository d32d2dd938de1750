"""Which HTML and CSS features a rendered issue uses that some inboxes do not support.

The support data is caniemail.com's (MIT), kept compact in `data/caniemail.json` with its date
and licence; `scripts/refresh_caniemail.py` refreshes it from the `caniemail` npm package. The
check reads the finished HTML, so it sees what the template, MJML and premailer made, and leaves
out what sits in Outlook's conditional comments (written for Outlook on purpose).
"""

from __future__ import annotations

import functools
import html as html_lib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

# Features unsupported somewhere that MJML's output or the default template uses knowing it, each
# with what those clients show instead. Any other unsupported feature is a render warning.
_PREHEADER = "MJML's hidden preheader; Outlook for Windows hides it by mso-hide"
_WRAP = "long words and URLs wrap where supported; elsewhere the table's width holds them"
ON_PURPOSE = MappingProxyType({
    "css-at-media": "MJML's fluid columns; Outlook for Windows gets fixed-width tables in conditional comments",
    "css-at-media-prefers-color-scheme": "the template's dark mode; other clients show the light design",
    "html-meta-color-scheme": "the template's dark mode; other clients show the light design",
    "css-selector-attribute": "Outlook.com's [data-ogsc] dark-mode hooks; elsewhere they match nothing",
    "css-selector-chaining": "dark-mode and MJML rules; the styles that matter are inlined too",
    "css-selector-child": "dark-mode rules; without them the light design stays",
    "css-border-radius": "the template's rounded cards; Outlook for Windows draws square corners",
    "css-height": "MJML's image and spacer heights; the height attribute holds them in Yahoo",
    "css-max-height": _PREHEADER,
    "css-opacity": _PREHEADER,
    "css-overflow": _PREHEADER,
    "css-outline": "MJML's image reset; no outline is drawn anyway",
    "css-word-spacing": "MJML's body reset to normal, which is every client's default",
    "css-overflow-wrap": _WRAP,
    "css-word-break": _WRAP,
    "css-word-wrap": _WRAP,
    "html-wbr": "break opportunities in long words, URLs and code for Yahoo; Gmail iOS wraps them by word-break",
    "html-aria-label": "MJML names the message for screen readers; Yahoo reads the subject instead",
    "html-body": "MJML's body attributes; Outlook for macOS takes the body's content as it is",
    "html-doctype": "MJML's HTML5 doctype; Outlook for Windows renders with Word either way",
    # What MJML's stock components (mj-image, mj-button, mj-spacer, mj-social) write.
    "css-border-spacing": "MJML's social and button tables; their cellspacing attribute holds it in Outlook",
    "css-cursor": "MJML's button; a client without it shows its own pointer over the link",
    "css-float": "MJML's social icons and columns; Outlook for Windows gets tables in conditional comments",
    "html-target": "MJML's links open a new tab where the client allows; elsewhere the client decides",
})


@dataclass(frozen=True)
class Finding:
    """One feature the issue uses that a listed client supports only partly, or not at all."""

    slug: str
    title: str
    unsupported: tuple[str, ...]
    partial: tuple[str, ...]
    notes: tuple[str, ...]
    on_purpose: str = ""

    @property
    def url(self) -> str:
        return f"https://www.caniemail.com/features/{self.slug}/"


@dataclass(frozen=True)
class Report:
    """The check of one rendered issue: what it uses that is not supported everywhere."""

    data_date: str
    clients: tuple[str, ...]
    features_used: int
    findings: tuple[Finding, ...]

    def summary(self) -> str:
        return (f"Email client support (caniemail.com data of {self.data_date}): {self.features_used} features used, "
                f"{len(self.unexpected)} unexpected")

    @property
    def unexpected(self) -> tuple[Finding, ...]:
        """Features unsupported somewhere that nothing here uses on purpose: worth a warning."""
        return tuple(f for f in self.findings if f.unsupported and not f.on_purpose)


@functools.cache
def _data() -> dict[str, Any]:
    raw = resources.files("newsletter").joinpath("data/caniemail.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(raw)
    return data


def data_date() -> str:
    """The day caniemail's data was last updated, as the package records it."""
    return str(_data()["last_update_date"])[:10]


# One pass drops every comment, and with it what `<!--[if mso]> … <![endif]-->` holds for Outlook,
# while the content between `<!--[if !mso]><!-->` and `<!--<![endif]-->`, which every other
# client shows, stays in.
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
_AT_RULE = re.compile(r"@([a-z-]+)([^{;]*)")
_MEDIA_FEATURE = re.compile(r"\(\s*([a-z-]+)\s*[:)]")
_DECLARATION = re.compile(r"(-?[a-z-]+)\s*:\s*([^;]+)")
_UNIT = re.compile(r"(?<![a-z#-])\d*\.?\d+(px|em|rem|%|pt|pc|vh|vw|vmin|vmax|ch|ex|cm|mm|in)(?![a-z])")
_FUNCTION = re.compile(r"([a-z-]+)\(")
_PSEUDO = re.compile(r"::?([a-z-]+)")
_COMPOUND = re.compile(r"[^\s>+~]+")
_IMAGE_EXTENSION = re.compile(r"\.([a-z0-9]+)(?:[?#]|$)")


def _declarations(block: str) -> Iterator[tuple[str, str]]:
    for declaration in _DECLARATION.finditer(block):
        name, value = declaration.group(1), declaration.group(2).strip()
        yield ("property", name)
        if name.startswith("--"):
            yield ("function", "var")
        if "!important" in value:
            yield ("keyword", "!important")
        value = value.replace("!important", "").strip().lower()
        yield ("value", f"{name}:{value}")
        for unit in _UNIT.findall(value):
            yield ("unit", unit)
        for function in _FUNCTION.findall(value):
            yield ("function", function)
        for word in re.split(r"[\s,]+", value):
            yield ("keyword", word)


def _selector(selector: str) -> Iterator[tuple[str, str]]:
    groups = [part.strip() for part in selector.split(",") if part.strip()]
    if len(groups) > 1:
        yield ("selector", "grouping")
    for group in groups:
        for combinator, name in ((">", "child"), ("+", "adjacent-sibling"), ("~", "general-sibling")):
            if combinator in group:
                yield ("selector", name)
        compounds = _COMPOUND.findall(group)
        if len(compounds) > 1 and re.search(r"[^\s>+~]\s+[^\s>+~]", group):
            yield ("selector", "descendant")
        for compound in compounds:
            yield from _compound(compound)


_SIMPLE = re.compile(r"[.#][\w-]+|\[[^\]]*\]|::?[\w-]+(?:\([^)]*\))?|^\*|^[a-z][\w-]*")
_SIMPLE_KINDS = (("selector", ".", "class"), ("selector", "#", "id"), ("selector", "[", "attribute"),
                 ("selector", "*", "universal"))


def _compound(compound: str) -> Iterator[tuple[str, str]]:
    """The simple selectors of one compound (`a.b:hover`): type, class, id, attribute, universal, pseudo."""
    simple = _SIMPLE.findall(compound)
    if len(simple) > 1:
        yield ("selector", "chaining")
    for part in simple:
        if part.startswith(":"):
            yield ("pseudo", _PSEUDO.match(part).group(1))  # type: ignore[union-attr]
            continue
        yield next(((kind, name) for kind, start, name in _SIMPLE_KINDS if part.startswith(start)),
                   ("selector", "type"))


def _stylesheet(css: str) -> Iterator[tuple[str, str]]:
    if _CSS_COMMENT.search(css):
        yield ("css-comment", "")
        css = _CSS_COMMENT.sub("", css)
    for at_rule in _AT_RULE.finditer(css):
        yield ("at-rule", at_rule.group(1))
        for feature in _MEDIA_FEATURE.findall(at_rule.group(2)):
            yield ("media-feature", feature)
    for rule in _RULE.finditer(css):
        prelude = rule.group(1).strip()
        if prelude.startswith("@"):
            continue
        prelude = _AT_RULE.sub("", prelude).strip()
        yield from _selector(prelude)
        yield from _declarations(rule.group(2))


_TAG = re.compile(r"<([a-zA-Z][a-zA-Z0-9]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>")
_ATTRIBUTE = re.compile(r"""([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?""")
_STYLE_ELEMENT = re.compile(r"<style\b[^>]*>(.*?)</style>", re.S | re.I)


def _element(tag: str, attributes: str) -> Iterator[tuple[str, str]]:
    yield ("element", tag)
    values = {}
    for match in _ATTRIBUTE.finditer(attributes):
        name = match.group(1).lower()
        value = html_lib.unescape(next((g for g in match.groups()[1:] if g is not None), ""))
        values[name] = value
        yield ("attribute", name)
    yield from _what_the_element_does(tag, values)
    if "style" in values:
        yield ("style", values["style"])


def _what_the_element_does(tag: str, values: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Features a tag shows by its attributes: an input's type, a link's kind, a meta's name, an image's format."""
    if tag in ("input", "button"):
        yield ("element", f"{tag}[{values.get('type', 'text' if tag == 'input' else 'submit').lower()}]")
    elif tag == "a":
        for prefix in ("#", "mailto:"):
            if values.get("href", "").startswith(prefix):
                yield ("link", prefix)
    elif tag == "meta" and values.get("name"):
        yield ("meta", values["name"].lower())
    elif tag == "img":
        src = values.get("src", "").lower()
        if src.startswith("data:"):
            yield ("image", "base64")
        elif extension := _IMAGE_EXTENSION.search(src.split("%%")[0]):
            yield ("image", extension.group(1))


def used(html: str) -> set[tuple[str, str]]:
    """Every (kind, name) the HTML shows, in the terms of the data's `match` lists.

    Tags are read by pattern, each distinct tag once: MJML repeats the same few hundred times.
    """
    found: set[tuple[str, str]] = set()
    if html.lstrip()[:15].lower() == "<!doctype html>":
        found.add(("doctype", ""))
    if "<!--" in html:
        found.add(("html-comment", ""))
    html = _COMMENT.sub("", html)
    styles: set[str] = set()
    for tag in {(m.group(1).lower(), m.group(2)) for m in _TAG.finditer(html)}:
        for kind, name in _element(*tag):
            if kind == "style":
                styles.add(name)
            else:
                found.add((kind, name))
    for css in _STYLE_ELEMENT.findall(html):
        found.update(_stylesheet(css))
    declarations = {part.strip() for style in styles for part in style.split(";")}
    for declaration in declarations:
        found.update(_declarations(declaration))
    return found


def _features() -> Iterable[tuple[str, dict[str, Any]]]:
    return _data()["features"].items()  # type: ignore[no-any-return]


def check(html: str) -> Report:
    """The features `html` uses that a listed client does not fully support."""
    shown = used(html)
    findings = []
    count = 0
    for slug, feature in _features():
        if not any((kind, name) in shown for kind, name in feature["match"]):
            continue
        count += 1
        support: dict[str, str] = feature["support"]
        unsupported = tuple(client for client, result in support.items() if result.startswith("n"))
        partial = tuple(client for client, result in support.items() if result.startswith("a"))
        if not unsupported and not partial:
            continue
        cited = {num for client in unsupported + partial for num in re.findall(r"#(\d+)", support[client])}
        notes = tuple(f"{num}: {text}" for num, text in feature["notes"].items() if num in cited)
        findings.append(Finding(slug=slug, title=feature["title"], unsupported=unsupported, partial=partial,
                                notes=notes, on_purpose=ON_PURPOSE.get(slug, "")))
    return Report(data_date=data_date(), clients=tuple(_data()["clients"]), features_used=count,
                  findings=tuple(findings))
