"""The Markdown an issue is written in: CommonMark with tables and strikethrough, no raw HTML,
placeholders kept whole inside link targets, and `{width=W height=H}` after an image (the attrs
plugin of mdit-py-plugins, for images only; `images` checks what it reads). One parser, configured
once, for reading an issue and for rendering it."""

from __future__ import annotations

from markdown_it import MarkdownIt
from mdit_py_plugins.attrs import attrs_plugin

from . import placeholders


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    md.use(attrs_plugin, after=("image",))
    normalize = md.normalizeLink

    def keep_placeholders(url: str) -> str:
        # markdown-it would percent-encode the `%%` of a placeholder inside a link target.
        names = placeholders.PATTERN.findall(url)
        masked = placeholders.PATTERN.sub("\x00", url)
        out = normalize(masked)
        for name in names:
            out = out.replace("%00", f"%%{name}%%", 1)
        return out

    md.normalizeLink = keep_placeholders  # type: ignore[method-assign]
    return md


MARKDOWN = _markdown()
