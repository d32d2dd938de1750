"""Subscriber fields: the one home of their limits and cleaning.

`add`, import, the public form and the store all go through `name` and `attributes`, so a value
is refused (or kept) the same way, with the same message, whichever way it came in and on every
database: the limits are within the columns' sizes. Text the program writes itself (a change's
source or reason) is cut to its column by `clip` instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import FieldError, InputError
from .placeholders import one_line

NAME = 300  # characters of a subscriber's name (the column holds 300)
ATTRIBUTE_KEY = 100
ATTRIBUTE_VALUE = 2_000
SOURCE = 100  # where a change came from ("import people.csv", "web", "sendgrid webhook")
REASON = 300  # why a membership changed or an address is suppressed
TAG = 64  # characters of one tag
TAGS_PER_PERSON = 100

_TAG = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_text(value: str) -> str:
    """Text as stored: line breaks and tabs become spaces (a line break could start a header)."""
    return one_line(value).strip()


def reject_controls(value: str, what: str) -> str:
    """`value` unchanged, or InputError when it holds a control character other than a tab or a line
    break (PostgreSQL refuses NUL in text, and the others have no business in a name)."""
    found = _CONTROLS.search(value)
    if found:
        raise InputError(f"{what} holds a control character (U+{ord(found.group()):04X}) at position "
                         f"{found.start() + 1}")
    return value


def name(value: str) -> str:
    """A subscriber's name, cleaned; FieldError when it is too long or holds a control character."""
    try:
        cleaned = clean_text(reject_controls(value, "the name"))
    except InputError as exc:
        raise FieldError("name", str(exc)) from None
    if len(cleaned) > NAME:
        raise FieldError("name", f"the name is {len(cleaned):,} characters; at most {NAME}")
    return cleaned


def attributes(values: Mapping[str, object]) -> dict[str, str]:
    """A subscriber's attributes as text, cleaned; FieldError naming the first one that is refused."""
    try:
        cleaned = {clean_text(str(k)): clean_text(reject_controls(str(v), f"attribute {str(k)[:40]!r}"))
                   for k, v in values.items()}
    except InputError as exc:
        raise FieldError("attributes", str(exc)) from None
    for key, value in cleaned.items():
        if len(key) > ATTRIBUTE_KEY or len(value) > ATTRIBUTE_VALUE:
            raise FieldError("attributes", f"attribute {key[:40]!r} is too long (names at most {ATTRIBUTE_KEY}, "
                                           f"values at most {ATTRIBUTE_VALUE} characters)")
    return cleaned


def clip(text: str, limit: int) -> str:
    """Program-made text (a source, a reason) cut to its column, on one line."""
    return clean_text(text)[:limit]


def tags(values: str | list[str] | tuple[str, ...]) -> list[str]:
    """Tags as stored: lowercase, in order, once each; a text of them may be separated by commas or
    semicolons (Mailchimp's and listmonk's exports). FieldError naming the first one refused: a tag is
    a word of letters, digits, `-`, `_` and `.` (what the segment language reads after `tag:`)."""
    given = re.split(r"[,;]", values) if isinstance(values, str) else list(values)
    found: list[str] = []
    for raw in given:
        tag = clean_text(str(raw)).lower()
        if not tag:
            continue
        if len(tag) > TAG or not _TAG.match(tag):
            raise FieldError("tags", f"tag {tag[:40]!r}: use at most {TAG} letters, digits, '-', '_' and '.', "
                                     f"starting with a letter or digit")
        if tag not in found:
            found.append(tag)
    if len(found) > TAGS_PER_PERSON:
        raise FieldError("tags", f"{len(found)} tags; at most {TAGS_PER_PERSON} per person")
    return found
