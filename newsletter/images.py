"""The size an issue's images are drawn at: written after the image in the Markdown
(`![badge](https://…/b.png){width=120 height=40}`), or read from the file when it lies next to the
issue; the template's column caps it. An image of unknown size is drawn at the column's width.

Outlook for Windows draws an image at its `width` attribute whatever the CSS says, so the size
has to be known when the issue is rendered, not left to the client.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from .errors import ContentError

if TYPE_CHECKING:
    from markdown_it.tree import SyntaxTreeNode

ATTRIBUTES = frozenset({"src", "alt", "title", "width", "height"})
MAX_SIDE = 10_000


def size(tree: SyntaxTreeNode, issue_path: Path, line_of: Callable[[SyntaxTreeNode], int]) -> None:
    """Check each image's written size, and give the ones next to the issue the size of their file;
    a ContentError names the line of a size that is not one, or of a file that is not an image."""
    for node in tree.walk():
        if node.type != "image" or node.token is None:
            continue
        where = f"{issue_path}:{line_of(node)}"
        attrs = node.token.attrs
        extra = sorted(set(attrs) - ATTRIBUTES)
        if extra:
            raise ContentError(f"{where}: image attribute {extra[0]!r}: only {{width=W height=H}} may follow an image")
        given = [name for name in ("width", "height") if name in attrs]
        if len(given) == 1:
            raise ContentError(f"{where}: an image needs both width and height (in px), or neither")
        for name in given:
            value = str(attrs[name])
            if not value.isdigit() or not 0 < int(value) <= MAX_SIDE:
                raise ContentError(f"{where}: image {name}={value!r} must be a whole number of pixels, "
                                   f"1 to {MAX_SIDE}")
        src = str(attrs.get("src", ""))
        local = _next_to(issue_path, src)
        if not given and local is not None:
            width, height = _file_size(local, where, src)
            node.token.attrSet("width", str(width))
            node.token.attrSet("height", str(height))


def _next_to(issue_path: Path, src: str) -> Path | None:
    """The file a relative image path names beside the issue, if it is there."""
    parts = urlsplit(src)
    if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/") or src.startswith("%%"):
        return None
    candidate = issue_path.parent / unquote(parts.path)
    return candidate if candidate.is_file() else None


def _file_size(path: Path, where: str, src: str) -> tuple[int, int]:
    from PIL import Image  # only for an issue with an image file beside it

    try:
        with Image.open(path) as image:  # reads the header, not the pixels
            return image.size
    except (OSError, Image.DecompressionBombError) as exc:
        raise ContentError(f"{where}: {src} is not an image that can be read ({exc})") from None


def drawn(width: int, height: int, column: int) -> tuple[int, int]:
    """The size an image of `width` by `height` px is drawn at in a column `column` px wide."""
    if width <= column:
        return width, height
    return column, max(1, round(height * column / width))
