"""Read an issue file: YAML front matter, then a CommonMark body (GFM tables and strikethrough).

The body is parsed once into a syntax tree; `render` turns the same tree into the HTML fragment
and the plain-text part, so both always carry the same content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import yaml

from . import images, placeholders
from .errors import ContentError

if TYPE_CHECKING:
    from markdown_it.tree import SyntaxTreeNode

    from .config import NewsletterSettings

FRONT_MATTER_KEYS = ("subject", "date", "preheader", "slug", "from", "reply_to", "draft")
REQUIRED_KEYS = ("subject", "date")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_ABSOLUTE_SCHEMES = ("http", "https", "mailto", "tel")


@dataclass(frozen=True)
class Issue:
    """One weekly issue as written by the operator."""

    path: Path
    subject: str
    date: dt.date
    body: str
    body_line: int
    preheader: str = ""
    slug: str = ""
    from_header: str = ""
    reply_to: str = ""
    draft: bool = False  # kept from every automatic send: cron's `send --due`, the scheduler, pins
    tree: SyntaxTreeNode | None = field(default=None, compare=False, repr=False)


class _FrontMatterLoader(yaml.SafeLoader):
    """Safe YAML that leaves dates as text, so a bad date gets our message and line, not a crash.

    Aliases are refused: front matter needs none, and nested aliases (a "billion laughs" file)
    expand into more than any memory holds.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event: Any = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", event.start_mark)
        return super().compose_node(parent, index)


_FrontMatterLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ContentError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ContentError(f"{path}: is a directory, not an issue file") from None
    except OSError as exc:
        raise ContentError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ContentError(f"{path}:{line}: not UTF-8 text (byte {exc.start})") from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def _split_front_matter(path: Path, text: str) -> tuple[str, str, int]:
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise ContentError(f"{path}:1: missing front matter: the file must start with a '---' line")
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            return "\n".join(lines[1:index]), "\n".join(lines[index + 1 :]), index + 2
    raise ContentError(f"{path}:1: front matter is not closed: add a '---' line after it")


def _key_line(front: str, key: str) -> int:
    for number, line in enumerate(front.split("\n"), start=2):
        if line.startswith(f"{key}:"):
            return number
    return 1


def _parse_date(path: Path, line: int, value: Any) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ContentError(f"{path}:{line}: date: {value!r} is not an ISO date (YYYY-MM-DD)") from None


def _address(path: Path, line: int, key: str, value: Any) -> str:
    text = str(value)
    if "\r" in text or "\n" in text or "@" not in parseaddr(text)[1]:
        raise ContentError(f"{path}:{line}: {key}: {text!r} is not an email address")
    return text


MAX_ISSUE_BYTES = 512 * 1024  # a weekly issue is a few KB; Gmail clips the HTML at 102 KB anyway


def load(path: str | Path, settings: NewsletterSettings) -> Issue:
    """The issue at `path` as this newsletter reads it: links against its base URL, within its size limit."""
    return parse(path, base_url=settings.base_url, max_bytes=settings.max_issue_bytes)


def heading(path: str | Path, settings: NewsletterSettings) -> Issue:
    """The issue at `path` with its front matter read and checked, its body not parsed: what the due
    rule needs of every file in `issues/` (the date, the slug, draft or not), at a fraction of the cost."""
    return _heading(Path(path), settings.max_issue_bytes)[0]


def parse(path: str | Path, *, base_url: str = "", max_bytes: int = MAX_ISSUE_BYTES) -> Issue:
    """Read and check the issue at `path`; every problem is a ContentError naming file and line."""
    from markdown_it.tree import SyntaxTreeNode

    from .syntax import MARKDOWN

    issue, front = _heading(Path(path), max_bytes)
    _check_placeholders(issue, front)
    tree = SyntaxTreeNode(MARKDOWN.parse(issue.body))
    images.size(tree, issue.path, lambda node: _line_of(node, issue))
    _resolve_links(issue, tree, base_url)
    return dataclasses.replace(issue, tree=tree)


def _heading(path: Path, max_bytes: int) -> tuple[Issue, str]:
    """The issue without its tree, and its front matter's text."""
    _check_size(path, max_bytes)
    text = _read_text(path)
    front, body, body_line = _split_front_matter(path, text)
    meta = _front_matter(path, front)
    subject = str(meta["subject"])
    if "\r" in subject or "\n" in subject:
        raise ContentError(f"{path}:{_key_line(front, 'subject')}: subject must be one line")
    slug = str(meta.get("slug") or path.stem)
    if not _SLUG.match(slug):
        raise ContentError(
            f"{path}:{_key_line(front, 'slug')}: slug {slug!r} may hold only a-z, 0-9, '.', '_' and '-'"
        )
    draft = meta.get("draft", False)
    if not isinstance(draft, bool):
        raise ContentError(f"{path}:{_key_line(front, 'draft')}: draft: {draft!r} must be true or false")

    def address(key: str) -> str:
        return _address(path, _key_line(front, key), key, meta[key]) if meta.get(key) else ""

    issue = Issue(
        path=path,
        subject=subject,
        date=_parse_date(path, _key_line(front, "date"), meta["date"]),
        body=body,
        body_line=body_line,
        preheader=" ".join(str(meta.get("preheader") or "").split()),
        slug=slug,
        from_header=address("from"),
        reply_to=address("reply_to"),
        draft=draft,
    )
    return issue, front


def _check_size(path: Path, max_bytes: int) -> None:
    with contextlib.suppress(OSError):  # a missing file gets its own message from _read_text
        size = path.stat().st_size
        if size > max_bytes:
            raise ContentError(f"{path}: the issue is {size / 1024:,.0f} KB, over the limit of "
                               f"{max_bytes / 1024:,.0f} KB ([newsletter] max_issue_bytes)")


def _front_matter(path: Path, front: str) -> dict[str, Any]:
    """The front matter's keys, each known, the required ones present."""
    try:
        meta = yaml.load(front, Loader=_FrontMatterLoader) if front.strip() else {}  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ContentError(f"{path}:{line}: front matter: {problem}") from None
    if not isinstance(meta, dict):
        raise ContentError(f"{path}:2: front matter must be 'key: value' lines")
    for key in meta:
        if key not in FRONT_MATTER_KEYS:
            raise ContentError(
                f"{path}:{_key_line(front, str(key))}: front matter: unknown key {key!r} "
                f"(known: {', '.join(FRONT_MATTER_KEYS)})"
            )
    for key in REQUIRED_KEYS:
        if meta.get(key) in (None, ""):
            raise ContentError(f"{path}:1: front matter: required key {key!r} is missing")
    return meta


def _check_placeholders(issue: Issue, front: str) -> None:
    for key, text, line in (
        ("subject", issue.subject, _key_line(front, "subject")),
        ("preheader", issue.preheader, _key_line(front, "preheader")),
    ):
        for name in placeholders.used(text):
            if not placeholders.is_known(name):
                raise ContentError(f"{issue.path}:{line}: {key}: unknown placeholder %%{name}%%")
    for number, line_text in enumerate(issue.body.split("\n"), start=issue.body_line):
        for name in placeholders.used(line_text):
            if not placeholders.is_known(name):
                raise ContentError(
                    f"{issue.path}:{number}: unknown placeholder %%{name}%% "
                    f"(known: {', '.join(placeholders.FIXED)}, attr.KEY)"
                )


def _line_of(node: SyntaxTreeNode, issue: Issue) -> int:
    current: SyntaxTreeNode | None = node
    while current is not None:
        if current.map:
            return issue.body_line + current.map[0]
        current = current.parent
    return issue.body_line


def absolute_url(url: str, base_url: str) -> str | None:
    """`url` made absolute against `base_url`; None when it is relative and there is no base."""
    if url.startswith("%%") or urlsplit(url).scheme in _ABSOLUTE_SCHEMES:
        return url
    if not base_url:
        return None
    return urljoin(base_url.rstrip("/") + "/", url)


def _resolve_links(issue: Issue, tree: SyntaxTreeNode, base_url: str) -> None:
    for node in tree.walk():
        attr = {"link": "href", "image": "src"}.get(node.type)
        if attr is None:
            continue
        url = str(node.attrs.get(attr, ""))
        resolved = absolute_url(url, base_url)
        if resolved is None:
            raise ContentError(
                f"{issue.path}:{_line_of(node, issue)}: relative link {url!r} needs "
                f"[newsletter] base_url in the config"
            )
        token = node.token or (node.nester_tokens.opening if node.nester_tokens else None)
        if token is None:
            continue
        token.attrSet(attr, resolved)
