"""Where templates come from: the project's `templates` folder first, then the ones shipped
with the package, so a project customises only the files it wants and runs from any folder.

Every template is compiled at start-up (`check`), so a broken one is a one-line error naming
its file and line before anything is sent or served, not a 500 at the first request.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

from .errors import RenderError

SKELETON = Path(__file__).with_name("skeleton")  # what `newsletter init` writes
BUILTIN = SKELETON / "templates"
MAIL = ("issue.mjml", "issue.txt", "confirm.mjml", "confirm.txt")
WEB = ("archive.html", "base.html", "confirm.html", "embed.html", "message.html", "subscribe.html", "unsubscribe.html")


def _loader(folder: Path, sub: str = "") -> jinja2.BaseLoader:
    return jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(folder / sub)),
                                jinja2.FileSystemLoader(str(BUILTIN / sub))])


@functools.lru_cache(maxsize=8)
def environment(folder: Path) -> jinja2.Environment:
    """One Jinja2 environment per templates folder; autoescape is on for MJML, HTML and XML."""
    return jinja2.Environment(
        loader=_loader(folder),
        autoescape=jinja2.select_autoescape(enabled_extensions=("mjml", "html", "xml")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


@functools.lru_cache(maxsize=8)
def web_environment(folder: Path) -> jinja2.Environment:
    """The web pages' environment: `web/` of the folder, else of the package."""
    return jinja2.Environment(loader=_loader(folder, "web"), autoescape=True)


def syntax_error(exc: jinja2.TemplateSyntaxError, name: str) -> RenderError:
    """The one-line error for a template that does not compile, naming its file and line."""
    return RenderError(f"{exc.filename or name}:{exc.lineno}: template error: {exc.message}")


def _get(env: jinja2.Environment, folder: Path, name: str) -> jinja2.Template:
    try:
        return env.get_template(name)
    except jinja2.TemplateNotFound as exc:
        raise RenderError(f"{folder / str(exc.name)}: template not found") from None
    except jinja2.TemplateSyntaxError as exc:
        raise syntax_error(exc, name) from None


def get(folder: Path, name: str) -> jinja2.Template:
    """A mail template by name; its errors become one-line RenderErrors naming file and line."""
    return _get(environment(folder), folder, name)


def check(folder: Path) -> None:
    """Compile every template the mail and the web pages use, each in the environment that renders
    it, which keeps the compiled template for its first use."""
    for name in MAIL:
        get(folder, name)
    for page in WEB:
        _get(web_environment(folder), folder / "web", page)
