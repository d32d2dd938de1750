"""Turn a parsed issue into the finished email: Jinja2 → MJML → mjml-python → premailer.

Rendering happens once per issue. Per-recipient values stay as `%%…%%` placeholders (see
`placeholders`) so that a send to a million people costs one render plus a cheap fill each.
This module knows nothing of subscribers or the store.
"""

from __future__ import annotations

import datetime as dt
import difflib
import html as html_lib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jinja2
import mjml
import premailer
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode
from markupsafe import Markup

from . import compat, images, placeholders, plaintext
from .config import NewsletterSettings
from .content import Issue
from .errors import RenderError
from .syntax import MARKDOWN
from .templates import Templates, syntax_error

GMAIL_CLIP_BYTES = 102 * 1024
CLIP_WARN_BYTES = 85 * 1024  # warned before the clip: a few more lines, or longer names, and Gmail clips
TRACKED_LINK_BYTES = 350  # a click-tracked link, as SendGrid and Mailgun rewrite one
# What each placeholder grows to when it is filled (links beyond the base URL): a link with its token.
_FILLED = MappingProxyType({"unsubscribe_url": 100, "preferences_url": 100, "view_url": 40, "name": 20, "email": 30})
_LINK = re.compile(r'<a\b[^>]*?href="(https?://[^"]*)"[^>]*>')
SUBJECT_WARN_CHARS = 78
IMAGE_WIDTH_PX = 552  # a template that does not size images: 600 px body minus 24 px padding each side
HEAD_EXTRAS = (
    # Apple Mail would otherwise scale the message down to fit, making its text tiny.
    '<meta name="x-apple-disable-message-reformatting">'
    '<meta name="color-scheme" content="light dark">'
    '<meta name="supported-color-schemes" content="light dark">'
    # iOS turns dates, addresses and numbers into blue links unless told not to ...
    '<meta name="format-detection" content="telephone=no, date=no, address=no, email=no, url=no">'
    # ... and restyles the ones it still finds; keep them looking like the text around them.
    "<style>a[x-apple-data-detectors]{color:inherit!important;text-decoration:none!important;"
    "font-size:inherit!important;font-family:inherit!important;font-weight:inherit!important;"
    "line-height:inherit!important}</style>"
    # Outlook for Windows falls back to Times New Roman for a font stack it does not know.
    "<!--[if mso]><style>body,table,td,div,p,a,span{font-family:Arial,Helvetica,sans-serif!important}</style>"
    "<![endif]-->"
)
# After the preheader: invisible characters, so the inbox preview stops at the preheader rather
# than running on into the first words of the body.
PREHEADER_FILLER = Markup("&#847;&zwnj;&nbsp;" * 90)  # noqa: S704 - a constant of ours


@dataclass(frozen=True)
class Rendered:
    """A finished issue, placeholders still in: what every provider sends."""

    slug: str
    date: dt.date
    subject: str
    preheader: str
    html: str
    text: str
    size: int
    warnings: tuple[str, ...] = ()
    compatibility: compat.Report | None = None
    delivered: int = 0  # the HTML's bytes as it arrives: placeholders filled, links tracked if they are


class _EmailHTML(RendererHTML):
    """markdown-it's HTML renderer with email-safe images."""

    def fence(self, tokens, idx, options, env):  # type: ignore[no-untyped-def]
        return code_block_html(tokens[idx].content)

    def code_block(self, tokens, idx, options, env):  # type: ignore[no-untyped-def]
        return code_block_html(tokens[idx].content)

    def _open_with(self, tokens: list[Token], idx: int, options: Any, env: Any, **attrs: str) -> str:
        # `tokens` is this render's own list: a changed copy of the token leaves the issue's tree alone.
        token = tokens[idx] = tokens[idx].copy()
        for name, value in attrs.items():
            token.attrSet(name, value)
        return self.renderToken(tokens, idx, options, env)

    # Each block takes the direction of its own text, so a Hebrew or Arabic paragraph reads right to left.
    def heading_open(self, tokens, idx, options, env):  # type: ignore[no-untyped-def]
        return self._open_with(tokens, idx, options, env, dir="auto")

    list_item_open = blockquote_open = heading_open

    def paragraph_open(self, tokens, idx, options, env):  # type: ignore[no-untyped-def]
        source = {"class": "source"} if _is_source_line(tokens, idx) else {}  # `*example.org*`: small, muted
        return self._open_with(tokens, idx, options, env, **source, dir="auto")

    def th_open(self, tokens, idx, options, env):  # type: ignore[no-untyped-def]
        return self._open_with(tokens, idx, options, env, scope="col")

    def text(self, tokens, idx, options, env):  # type: ignore[no-untyped-def]
        return breakable(tokens[idx].content)

    def code_inline(self, tokens, idx, options, env):  # type: ignore[no-untyped-def]
        return f"<code{self.renderAttrs(tokens[idx])}>{breakable(tokens[idx].content)}</code>"

    def image(self, tokens, idx, options, env):  # type: ignore[no-untyped-def]
        # Outlook for Windows draws an image at its width attribute, in pixels; every other client
        # follows the CSS, which lets the image shrink with a phone's screen but never grow.
        token = tokens[idx]
        column = int(env.get("image_width", IMAGE_WIDTH_PX))
        alt = self.renderInlineAsText(token.children or [], options, env)
        src = html_lib.escape(str(token.attrGet("src") or ""), quote=True)
        title = token.attrGet("title")
        title_attr = f' title="{html_lib.escape(str(title), quote=True)}"' if title else ""
        known = token.attrGet("width") is not None
        width, height = (images.drawn(int(str(token.attrGet("width"))), int(str(token.attrGet("height"))), column)
                         if known else (column, 0))
        size = f'width="{width}"' + (f' height="{height}"' if known else "")
        if _in_sentence(tokens):
            style = "display:inline-block;vertical-align:middle;max-width:100%;height:auto;border:0;margin:0;"
        else:
            style = f"display:block;width:100%;max-width:{width}px;height:auto;border:0;"
        return f'<img src="{src}" alt="{html_lib.escape(alt, quote=True)}"{title_attr} {size} style="{style}">'


def _is_source_line(tokens: list[Token], idx: int) -> bool:
    """A paragraph that is one emphasis and nothing else, such as an item's `*medium.com*`."""
    following = tokens[idx + 1] if idx + 1 < len(tokens) else None
    inline = (following.children if following is not None and following.type == "inline" else None) or []
    return bool(inline) and inline[0].type == "em_open" and inline[-1].type == "em_close" \
        and sum(t.type == "em_open" for t in inline) == 1


def _in_sentence(inline: list[Token]) -> bool:
    """Whether an image shares its paragraph with words (or other images): then it stays in the line."""
    images_seen = 0
    for token in inline:
        if token.type == "image":
            images_seen += 1
        elif (token.type == "text" and token.content.strip()) or token.type not in (
                "text", "softbreak", "link_open", "link_close"):
            return True
    return images_seen > 1


_RENDERER = _EmailHTML(MARKDOWN)
_SPACES = re.compile(r"^ +| {2,}")


@dataclass(frozen=True)
class Section:
    """A run of the issue's body: the part before the first `##` heading, or one item from its
    heading to the next. The template places each and says how wide its images are drawn."""

    tokens: tuple[Token, ...]

    def html(self, image_width: int = IMAGE_WIDTH_PX) -> Markup:
        # markdown-it runs with raw HTML off, so its output is HTML we made, safe to mark as such.
        return Markup(_RENDERER.render(list(self.tokens), MARKDOWN.options, {"image_width": image_width}))  # noqa: S704

    def __html__(self) -> str:
        return str(self.html())


def _tree(issue: Issue) -> SyntaxTreeNode:
    if issue.tree is None:
        raise RenderError(f"{issue.path}: issue was not parsed")
    return issue.tree


def article(issue: Issue, image_width: int = IMAGE_WIDTH_PX) -> str:
    """The issue's body alone as HTML, placeholders still in: what a feed reader shows, without the
    email's document, styles, Outlook's comments, preheader and footer."""
    return str(_section(_tree(issue).children).html(image_width))


def sections(tree: SyntaxTreeNode) -> tuple[Section, list[Section], Section]:
    """The intro (possibly empty), the items, split at each top-level `##` heading, and the sign-off:
    what follows a `---` rule in the last item (possibly empty), the rule itself dropped."""
    groups: list[list[SyntaxTreeNode]] = [[]]
    for node in tree.children:
        if node.type == "heading" and node.tag == "h2":
            groups.append([])
        groups[-1].append(node)
    signoff: list[SyntaxTreeNode] = []
    rules = [k for k, node in enumerate(groups[-1]) if node.type == "hr"]
    if len(groups) > 1 and rules:
        signoff = groups[-1][rules[-1] + 1:]
        groups[-1] = groups[-1][:rules[-1]]
    made = [_section(group) for group in [*groups, signoff]]
    return made[0], made[1:-1], made[-1]


def _section(nodes: list[SyntaxTreeNode]) -> Section:
    return Section(tuple(token for node in nodes for token in node.to_tokens()))


_LONG_RUN = re.compile(r"\S{24,}")
_BREAK_AFTER = re.compile(r"(?<=[/.?&=_,:;)\]-])")
_PIECE = 16


def breakable(text: str) -> str:
    """`text` HTML-escaped, with a <wbr> in each run of 24 or more characters without a space: after
    its punctuation, and every 16 characters where it has none. A long URL, word or code token
    then wraps on a phone in Yahoo and the clients that ignore `overflow-wrap` and `word-break`;
    placeholders stay whole."""
    out, at = [], 0
    for run in _LONG_RUN.finditer(text):
        out.append(escapeHtml(text[at:run.start()]))
        out.append("<wbr>".join(escapeHtml(piece) for piece in _pieces(run.group())))
        at = run.end()
    out.append(escapeHtml(text[at:]))
    return "".join(out)


def _pieces(run: str) -> list[str]:
    pieces: list[str] = []
    at = 0
    for held in placeholders.PATTERN.finditer(run):
        pieces.extend(_chop(run[at:held.start()]))
        pieces.append(held.group())
        at = held.end()
    pieces.extend(_chop(run[at:]))
    merged = [""]  # neighbours joined while they fit in 16 characters: fewer <wbr>s
    for piece in pieces:
        if len(merged[-1]) + len(piece) <= _PIECE:
            merged[-1] += piece
        else:
            merged.append(piece)
    return [piece for piece in merged if piece]


def _chop(part: str) -> list[str]:
    return [chunk[k:k + _PIECE] for chunk in _BREAK_AFTER.split(part) for k in range(0, len(chunk), _PIECE)]


def code_block_html(code: str) -> str:
    """A code block that keeps its shape without CSS `white-space`, which the Gmail app (for
    other accounts) and Outlook for Windows ignore: each line ends in <br>, and indentation and
    runs of spaces are non-breaking, while single spaces, and `breakable`'s <wbr> after the
    indentation and in long tokens, still let a long line wrap on a phone."""
    lines = []
    for line in code.rstrip("\n").split("\n"):
        escaped = breakable(line.expandtabs(4))
        lines.append(_SPACES.sub(_nonbreaking, escaped) or "&nbsp;")
    # In a one-cell table: Outlook for Windows keeps a cell's padding and background, not a div's.
    return ('<table class="code-box" role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">'
            '<tr><td class="code-cell" bgcolor="#eef1f4"><div class="code">' + "<br>".join(lines)
            + "</div></td></tr></table>\n")


def _nonbreaking(spaces: re.Match[str]) -> str:
    indentation = spaces.start() == 0 and spaces.end() < len(spaces.string)
    return "&nbsp;" * len(spaces.group()) + ("<wbr>" if indentation else "")


# MJML 4's components: mjml-python passes any other <mj-…> tag through as it is, so a typo
# would reach the inbox unnoticed.
MJML_TAGS = frozenset({
    "mjml", "mj-head", "mj-body", "mj-attributes", "mj-all", "mj-class", "mj-breakpoint", "mj-font",
    "mj-html-attributes", "mj-html-attribute", "mj-selector", "mj-preview", "mj-style", "mj-title", "mj-accordion",
    "mj-accordion-element", "mj-accordion-title", "mj-accordion-text", "mj-button", "mj-carousel",
    "mj-carousel-image", "mj-column", "mj-divider", "mj-group", "mj-hero", "mj-image", "mj-navbar",
    "mj-navbar-link", "mj-raw", "mj-section", "mj-social", "mj-social-element", "mj-spacer", "mj-table", "mj-text",
    "mj-wrapper", "mj-include",
})
_MJML_TAG = re.compile(r"</?(mj-[A-Za-z0-9-]+|mjml)\b")


def check_mjml_tags(source: str, origin: str) -> None:
    """A RenderError naming the line of the first tag MJML does not know (and the one meant)."""
    for number, line in enumerate(source.splitlines(), start=1):
        for tag in _MJML_TAG.findall(line):
            if tag not in MJML_TAGS:
                guess = difflib.get_close_matches(tag, MJML_TAGS, n=1)
                hint = f"; did you mean <{guess[0]}>?" if guess else ""
                raise RenderError(f"{origin}:{number}: unknown MJML tag <{tag}>{hint}")


def render_template(templates: Templates, name: str, context: Mapping[str, Any]) -> str:
    """Render one Jinja2 template; its errors become one-line RenderErrors naming file and line."""
    template = templates.get(name)
    try:
        if name.endswith(".mjml") and template.filename:
            check_mjml_tags(Path(template.filename).read_text(encoding="utf-8"), template.filename)
        return template.render(**context)
    except jinja2.TemplateSyntaxError as exc:  # a template it includes, compiled as it renders
        raise syntax_error(exc, name) from None
    except jinja2.TemplateError as exc:
        raise RenderError(f"{templates.folder / name}: template error: {exc}") from None


_MJML_RESETS = '<style type="text/css">\n#outlook a {'


def mjml_to_html(source: str, origin: str) -> str:
    """Compile MJML and inline its CSS, keeping the doctype, `@media` rules and `!important`."""
    try:
        compiled = mjml.mjml2html(source, fonts={}, disable_comments=True)
    except ValueError as exc:
        raise RenderError(f"{origin}: MJML error: {exc}") from None
    compiled = compiled.replace("</head>", HEAD_EXTRAS + "</head>", 1)
    # MJML's resets (tables' spacing for Outlook, body and image defaults) stay in the <style> block,
    # which Outlook for Windows reads, instead of being copied onto every table and cell.
    compiled = compiled.replace(_MJML_RESETS, _MJML_RESETS.replace("<style", '<style data-premailer="ignore"'), 1)
    inliner = premailer.Premailer(
        compiled,
        strip_important=False,
        keep_style_tags=True,
        remove_classes=False,
        allow_network=False,
        disable_validation=True,
        # Never turn CSS widths into attributes: Outlook for Windows takes an <img> width
        # attribute as pixels, so width="100%" (or height="auto") would draw images at the
        # file's own size. MJML and our images carry pixel width attributes of their own.
        disable_basic_attributes=["width", "height"],
        # It would parse (and validate) each image's style to look for a float, a few ms per
        # image; ours never float.
        align_floating_images=False,
        cssutils_logging_level=logging.CRITICAL,
    )
    out: str = inliner.transform(pretty_print=False).replace("<wbr></wbr>", "<wbr>")  # lxml knows no void <wbr>
    if not out.lstrip().lower().startswith("<!doctype"):
        out = "<!doctype html>" + out
    return out


def _date_label(date: dt.date) -> str:
    return f"{date.day} {date:%B %Y}"


def delivered_size(html: str, base_url: str, click_tracking: bool) -> int:
    """The bytes of `html` as a recipient gets it: each placeholder filled (a link with its token), and
    each link but the unsubscribe link rewritten for click tracking when that is on."""
    size = len(html.encode("utf-8"))
    for name, extra in _FILLED.items():
        grows = extra + (len(base_url) if name.endswith("_url") else 0) - len(name) - 4
        size += html.count(f"%%{name}") * grows
    if click_tracking:
        size += sum(max(0, TRACKED_LINK_BYTES - len(link.group(1))) for link in _LINK.finditer(html)
                    if 'clicktracking="off"' not in link.group(0))
    return size


def _html(templates: Templates, context: Mapping[str, Any], intro: Section, items: list[Section]) -> str:
    source = render_template(templates, "issue.mjml", {**context, "intro": intro, "items": items})
    return mjml_to_html(source, str(templates.folder / "issue.mjml"))


def _clip_warning(delivered: int, size: int, click_tracking: bool, fit: int | None, items: int) -> str:
    made = f"{size / 1024:.0f} KB rendered, with its links filled" + (" and click tracking" if click_tracking else "")
    where = (f"Gmail clips messages over {GMAIL_CLIP_BYTES // 1024} KB" if delivered > GMAIL_CLIP_BYTES
             else f"near the {GMAIL_CLIP_BYTES // 1024} KB before Gmail clips")
    return (f"HTML is about {delivered / 1024:.0f} KB as delivered ({made}): {where}"
            + (f"; about {fit} of its {items} items fit" if fit is not None else ""))


def _image_warnings(issue: Issue, tree: SyntaxTreeNode) -> list[str]:
    warnings = []
    for node in tree.walk():
        if node.type != "image":
            continue
        line = issue.body_line + (node.parent.map[0] if node.parent and node.parent.map else 0)
        if not plaintext.inline(node).strip():
            warnings.append(f"{issue.path}:{line}: image without alt text")
        if "width" not in node.attrs:
            warnings.append(f"{issue.path}:{line}: image {node.attrs.get('src', '')} has no known size, so it is "
                            f"drawn as wide as the column: write {{width=W height=H}} after it, or put the file "
                            f"next to the issue")
    return warnings


def render(issue: Issue, settings: NewsletterSettings, templates: Templates, *, subscribe_url: str = "",
           click_tracking: bool = False) -> Rendered:
    """Render `issue` once into HTML and text, with placeholders left for `placeholders.fill`.

    With `subscribe_url`, it is the web version: its footer invites to subscribe instead of
    naming an address and offering to unsubscribe. `click_tracking` (the provider's) counts in
    the size the message has as delivered, which Gmail's clip goes by.
    """
    tree = _tree(issue)
    warnings = _image_warnings(issue, tree)
    intro, items, signoff = sections(tree)
    context = {
        "newsletter": settings,
        "subject": issue.subject,
        "preheader": issue.preheader,
        "date": _date_label(issue.date),
        "slug": issue.slug,
        "subscribe_url": subscribe_url,
        "preheader_filler": PREHEADER_FILLER if issue.preheader else "",
        "content": _section(tree.children),
        "signoff": signoff,
    }
    html = _html(templates, context, intro, items)
    body_text = "\n".join(plaintext.blocks(tree.children))
    text = render_template(
        templates,
        "issue.txt",
        {**context, "content": body_text, "wrap": lambda s: "\n".join(plaintext.wrap(s))},
    )
    size = len(html.encode("utf-8"))
    delivered = delivered_size(html, settings.base_url, click_tracking)
    if delivered > CLIP_WARN_BYTES:
        fit = None
        if items:  # how many would fit: the bytes of the rest, from the message without its items
            rest = delivered_size(_html(templates, context, intro, []), settings.base_url, click_tracking)
            # Items differ in size: one fewer than the average says, so that "fit" is kept to.
            fit = max(0, int((GMAIL_CLIP_BYTES - rest) * len(items) / max(1, delivered - rest)) - 1)
        warnings.append(_clip_warning(delivered, size, click_tracking, fit, len(items)))
    if len(issue.subject) > SUBJECT_WARN_CHARS:
        warnings.append(f"subject is {len(issue.subject)} characters: many clients cut it near 60")
    if not issue.preheader:
        warnings.append("no preheader: clients will show the first words of the body instead")
    compatibility = compat.check(html)
    for finding in compatibility.unexpected:
        warnings.append(f"{finding.title} is not supported in {', '.join(finding.unsupported)} ({finding.url})")
    return Rendered(
        slug=issue.slug,
        date=issue.date,
        subject=issue.subject,
        preheader=issue.preheader,
        html=html,
        text=text,
        size=size,
        warnings=tuple(warnings),
        compatibility=compatibility,
        delivered=delivered,
    )
