"""The plain-text part, written from the Markdown syntax tree rather than by stripping HTML.

Links read as `text (URL)`, lists keep their bullets and numbers, code blocks stay verbatim,
quotes stay quoted across their paragraphs, a table too wide for the text becomes a list of its
rows, and prose wraps near 76 columns without ever breaking a URL or a long word.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from types import MappingProxyType

from markdown_it.tree import SyntaxTreeNode

WIDTH = 76


_LITERAL: Mapping[str, str] = MappingProxyType({"softbreak": " ", "hardbreak": "\n"})
_MARKS: Mapping[str, str] = MappingProxyType({"em": "_", "strong": "*", "s": "~~"})  # around emphasis


def inline(node: SyntaxTreeNode) -> str:
    """The readable text of an inline node and its children."""
    return "".join(_inline_child(child) for child in node.children)


def _inline_child(child: SyntaxTreeNode) -> str:
    kind = child.type
    if kind == "text":
        return child.content
    if kind == "code_inline":
        return f"`{child.content}`"
    if kind in _LITERAL:
        return _LITERAL[kind]
    if kind in _MARKS:
        return f"{_MARKS[kind]}{inline(child)}{_MARKS[kind]}"
    if kind == "link":
        label, href = inline(child), str(child.attrs.get("href", ""))
        return href if label in (href, href.removeprefix("mailto:")) else f"{label} ({href})"
    if kind == "image":
        return f"[{inline(child) or 'image'}] ({child.attrs.get('src', '')})"
    return inline(child) if child.children else child.content


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for piece in text.split("\n"):
        lines.extend(
            textwrap.wrap(
                piece, width=max(width, 20), break_long_words=False, break_on_hyphens=False
            )
            or [""]
        )
    return lines


def _indent(lines: list[str], first: str, rest: str) -> list[str]:
    return [(first if i == 0 else rest) + line if line else "" for i, line in enumerate(lines)]


def _list(node: SyntaxTreeNode, width: int) -> list[str]:
    ordered = node.type == "ordered_list"
    start = int(node.attrs.get("start", 1)) if ordered else 1
    items = [child for child in node.children if child.type == "list_item"]
    markers = [f"{start + i}. " if ordered else "- " for i in range(len(items))]
    pad = max(len(m) for m in markers) if markers else 2
    tight = all(p.hidden for item in items for p in item.children if p.type == "paragraph")
    out: list[str] = []
    for marker, item in zip(markers, items, strict=True):
        if out and not tight:
            out.append("")
        body = blocks(item.children, width - pad, tight=tight)
        out.extend(_indent(body or [""], marker.ljust(pad), " " * pad))
    return out


def _table(node: SyntaxTreeNode, width: int) -> list[str]:
    """A table as columns when it fits the width, else each row as a list item of `header: value` lines."""
    rows = [
        [inline(cell.children[0]) if cell.children else "" for cell in row.children]
        for section in node.children
        for row in section.children
    ]
    if not rows:
        return []
    widths = [max(len(row[i]) if i < len(row) else 0 for row in rows) for i in range(len(rows[0]))]
    if sum(widths) + 3 * len(widths) + 1 > width:
        return _rows(rows[0], rows[1:], width)

    def line(row: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return [line(rows[0]), rule, *(line(row) for row in rows[1:])]


def _rows(header: list[str], rows: list[list[str]], width: int) -> list[str]:
    out: list[str] = []
    for row in rows:
        if out:
            out.append("")
        for k, (label, value) in enumerate(zip(header, row, strict=False)):
            out.extend(_indent(_wrap(f"{label}: {value}", width - 4), "- " if k == 0 else "  ", "    "))
    return out


def block(node: SyntaxTreeNode, width: int) -> list[str]:
    """The lines of one block node."""
    kind = node.type
    if kind == "paragraph":
        return _wrap(inline(node.children[0]), width)
    if kind == "heading":
        lines = _wrap(inline(node.children[0]), width)
        if node.tag in ("h1", "h2"):  # underlined as wide as the heading's longest line
            return [*lines, ("=" if node.tag == "h1" else "-") * max(map(len, lines), default=0)]
        return lines
    if kind in ("bullet_list", "ordered_list"):
        return _list(node, width)
    if kind == "blockquote":  # a blank line inside stays quoted, so the quote stays one
        return [f"> {line}" if line else ">" for line in blocks(node.children, width - 2)]
    if kind in ("fence", "code_block"):  # indented, so it stands apart from prose; never wrapped
        return [f"    {line}".rstrip() for line in node.content.rstrip("\n").split("\n")]
    if kind == "hr":
        return ["-" * 24]
    if kind == "table":
        return _table(node, width)
    if kind == "inline":
        return _wrap(inline(node), width)
    return _wrap(node.content, width) if node.content else []


def blocks(nodes: list[SyntaxTreeNode], width: int = WIDTH, *, tight: bool = False) -> list[str]:
    """Block nodes one after another, separated by blank lines (none inside a tight list item)."""
    out: list[str] = []
    for node in nodes:
        lines = block(node, width)
        if not lines:
            continue
        if out and not tight:
            out.append("")
        out.extend(lines)
    return out


def wrap(text: str, width: int = WIDTH) -> list[str]:
    """Wrap a line of prose (used for the header and footer of the text part)."""
    return _wrap(text, width)
