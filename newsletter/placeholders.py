"""Per-recipient placeholders: `%%name%%`, `%%email%%`, `%%unsubscribe_url%%`, `%%preferences_url%%`,
`%%view_url%%`, `%%attr.KEY%%`.

An issue is rendered once with these left in; `fill` puts one recipient's values in. The `%%…%%`
form was chosen because it survives Markdown, MJML, premailer and lxml's URL escaping of `href`
byte for byte (`{{…}}`, `*|…|*` and `[…]` do not).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from types import MappingProxyType

# Group 1 is the placeholder's spec: its name, and after a "|" the text used when the value is
# empty (`%%name|there%%`). The spec is also the key a provider substitutes.
PATTERN = re.compile(r"%%([A-Za-z0-9_]+(?:\.[A-Za-z0-9_-]+)?(?:\|[^%|\r\n]{0,60})?)%%")
FIXED = ("name", "email", "unsubscribe_url", "preferences_url", "view_url")

# Values shown by `preview` and in test copies sent without a real subscriber.
SAMPLE_VALUES: Mapping[str, str] = MappingProxyType({
    "name": "Ada Lovelace",
    "email": "ada@example.com",
})

_BREAKS = re.compile(r"\r\n|[\r\n\t]")


def one_line(value: str) -> str:
    """`value` with each line break (CRLF is one) and tab made a space: a line break could start a header."""
    return _BREAKS.sub(" ", value) if "\r" in value or "\n" in value or "\t" in value else value


def neutral(view_url: str = "") -> dict[str, str]:
    """Values that are nobody's: a subject shown to all, or an issue's web version. Personal
    placeholders give way to their defaults or nothing."""
    return {"name": "", "email": "", "unsubscribe_url": "", "preferences_url": "", "view_url": view_url}


def is_known(spec: str) -> bool:
    """True for the fixed placeholders and any `attr.KEY` (a subscriber attribute), with or without a default."""
    name = spec.partition("|")[0]
    return name in FIXED or (name.startswith("attr.") and len(name) > 5)


def lookup(values: Mapping[str, str], spec: str) -> str:
    """The value of one placeholder spec: the recipient's value, or the spec's default when it is empty."""
    name, has_default, default = spec.partition("|")
    value = values.get(name, "")
    return value if value or not has_default else default


def used(text: str) -> set[str]:
    """The placeholder names that occur in `text`."""
    return set(PATTERN.findall(text))


# A value without these characters is the same plain, escaped for HTML, and in a header.
SPECIAL = re.compile(r"[\r\n&<>\"']")


def clean(value: str, *, html_escape: bool) -> str:
    """One value as it goes into a part: line breaks become spaces; escaped for HTML."""
    if SPECIAL.search(value) is None:  # the common case, checked in one pass
        return value
    value = one_line(value)
    return html.escape(value, quote=True) if html_escape else value


class Numbered:
    """An issue's placeholders numbered once, for a provider that substitutes per recipient itself
    (Mailgun, SES): each is `hN` in the HTML part and `tN` in text and headers, and `values` gives one
    recipient's, escaped for the HTML part."""

    def __init__(self, *texts: str) -> None:
        self.names = sorted(set().union(*(used(text) for text in texts)))
        self._index = {name: index for index, name in enumerate(self.names)}

    def key(self, spec: str, *, html: bool) -> str:
        return f"{'h' if html else 't'}{self._index[spec]}"

    def values(self, values: Mapping[str, str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for index, name in enumerate(self.names):
            value = lookup(values, name)
            found[f"h{index}"] = clean(value, html_escape=True)
            found[f"t{index}"] = clean(value, html_escape=False)
        return found


def fill(template: str, values: Mapping[str, str], *, html_escape: bool, only: bool = False) -> str:
    """Replace each placeholder with its value ("" when the recipient has none).

    HTML parts get escaped values; text parts and headers get them plain, with line breaks
    turned into spaces so that no value can start a new header line. With `only`, placeholders
    missing from `values` are left in place (for values shared by every recipient).
    """
    def value(match: re.Match[str]) -> str:
        spec = match.group(1)
        if only and spec.partition("|")[0] not in values:
            return match.group(0)
        return clean(lookup(values, spec), html_escape=html_escape)

    if "%%" not in template:
        return template
    return PATTERN.sub(value, template)


TOKEN = "link_token"  # noqa: S105 - the placeholder of a signed link token, in the links `link_tokens` writes
_LINKS = (("%%unsubscribe_url%%", "/unsubscribe/"), ("%%preferences_url%%", "/preferences/"))


def link_tokens(text: str, base_url: str, *, html_escape: bool) -> str:
    """`text` with its unsubscribe and preference links written out but for the token: every recipient's
    links are the same but for it."""
    base = clean(base_url, html_escape=html_escape)
    for spec, path in _LINKS:
        text = text.replace(spec, f"{base}{path}%%{TOKEN}%%")
    return text


def recipient_values(
    email: str, name: str, attributes: Mapping[str, object], unsubscribe_url: str, view_url: str,
    preferences_url: str = "", token: str = "",
) -> dict[str, str]:
    """The placeholder values of one recipient, every one a string."""
    values = {"name": name or "", "email": email, "unsubscribe_url": unsubscribe_url, "view_url": view_url,
              "preferences_url": preferences_url, TOKEN: token}
    if attributes:
        values.update({f"attr.{key}": "" if val is None else str(val) for key, val in attributes.items()})
    return values
