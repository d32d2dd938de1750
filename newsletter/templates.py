"""Where templates come from: the project's `templates` folder first, then the ones shipped
with the package, so a project customises only the files it wants and runs from any folder.

Every template is compiled at start-up (`check`), so a broken one is a one-line error naming
its file and line before anything is sent or served, not a 500 at the first request.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jinja2

from .errors import InputError, RenderError

SKELETON = Path(__file__).with_name("skeleton")  # what `newsletter init` writes
BUILTIN = SKELETON / "templates"
MAIL = ("issue.mjml", "issue.txt", "confirm.mjml", "confirm.txt")
WEB = ("archive.html", "base.html", "confirm.html", "embed.html", "message.html", "subscribe.html", "unsubscribe.html")


def _loader(folder: Path, sub: str = "") -> jinja2.BaseLoader:
    return jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(folder / sub)),
                                jinja2.FileSystemLoader(str(BUILTIN / sub))])


def syntax_error(exc: jinja2.TemplateSyntaxError, name: str) -> RenderError:
    """The one-line error for a template that does not compile, naming its file and line."""
    return RenderError(f"{exc.filename or name}:{exc.lineno}: template error: {exc.message}")


class Templates:
    """The templates of one project folder, then the package's: two Jinja2 environments, each template
    compiled once and kept by whoever holds this object (the front door), never by the process."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @functools.cached_property
    def mail(self) -> jinja2.Environment:
        """The mail's environment; autoescape is on for MJML, HTML and XML."""
        return jinja2.Environment(
            loader=_loader(self.folder),
            autoescape=jinja2.select_autoescape(enabled_extensions=("mjml", "html", "xml")),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )

    @functools.cached_property
    def web(self) -> jinja2.Environment:
        """The web pages' environment: `web/` of the folder, else of the package."""
        return jinja2.Environment(loader=_loader(self.folder, "web"), autoescape=True)

    def get(self, name: str) -> jinja2.Template:
        """A mail template by name; its errors become one-line RenderErrors naming file and line."""
        return _get(self.mail, self.folder, name)

    def check(self) -> None:
        """Compile every template the mail and the web pages use, each in the environment that renders
        it, which keeps the compiled template for its first use."""
        for name in MAIL:
            self.get(name)
        for page in WEB:
            _get(self.web, self.folder / "web", page)


def _get(env: jinja2.Environment, folder: Path, name: str) -> jinja2.Template:
    try:
        return env.get_template(name)
    except jinja2.TemplateNotFound as exc:
        raise RenderError(f"{folder / str(exc.name)}: template not found") from None
    except jinja2.TemplateSyntaxError as exc:
        raise syntax_error(exc, name) from None


def init_project(folder: str | os.PathLike[str]) -> list[Path]:
    """Write a working project into `folder`: config.toml (every key commented), the templates to
    customise, a sample issue and list. Refuses, writing nothing, if any of those files exists."""
    target = Path(folder)
    sources = sorted(p for p in SKELETON.rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts and ".db" not in p.name)
    for source in sources:
        relative = source.relative_to(SKELETON)
        for depth in range(1, len(relative.parts) + 1):  # the file and each folder on its way, inside target
            existing = target.joinpath(*relative.parts[:depth])
            if existing.is_symlink():
                raise InputError(f"{existing}: is a symlink; `newsletter init` never writes through one (it would "
                                 f"write outside {target}): remove it, or choose another folder")
        if existing.exists():
            raise InputError(f"{existing}: already exists; `newsletter init` writes only files that are not there yet "
                             f"(choose an empty folder)")
    written = []
    for source in sources:
        path = target / source.relative_to(SKELETON)
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL | O_NOFOLLOW: a file or link that appeared since the check is refused, not followed.
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(handle, "wb") as out:
            out.write(source.read_bytes())
        written.append(path)
    return written
