"""`nl.issues`: issue files read, rendered, written, previewed; the archive of sent ones."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from .part import Part

if TYPE_CHECKING:
    import jinja2

    from ..archive import Archive, ArchivedIssue
    from ..content import Issue
    from ..preview import PreviewServer
    from ..render import Rendered
    from ..templates import Templates


class Issues(Part):
    def load(self, path: str | os.PathLike[str]) -> Issue:
        """The issue file parsed and checked: a ContentError naming file and line otherwise."""
        from ..content import load

        return load(Path(path), self.config.newsletter)

    def render(self, issue: str | os.PathLike[str] | Issue) -> Rendered:
        """The issue rendered once, placeholders still in."""
        from ..content import Issue
        from ..render import render

        parsed = issue if isinstance(issue, Issue) else self.load(issue)
        return render(parsed, self.config.newsletter, self.templates, click_tracking=self.config.click_tracking)

    def write(self, path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> tuple[Rendered, Path, Path]:
        """Render and write `<slug>.html` and `<slug>.txt` to `out_dir`, each whole or not at all."""
        from ..files import atomic_write

        rendered = self.render(path)
        target = Path(out_dir)
        html_path, text_path = target / f"{rendered.slug}.html", target / f"{rendered.slug}.txt"
        atomic_write(html_path, rendered.html)
        atomic_write(text_path, rendered.text)
        return rendered, html_path, text_path

    def preview(self, path: str | os.PathLike[str], host: str, port: int) -> tuple[Rendered, PreviewServer]:
        """The rendered issue and a server showing it with sample values, rendering again whenever the
        issue or a template changes; the caller runs and closes it. Port 0 takes a free one."""
        import errno

        from ..preview import make_server, sample_values

        watched = [Path(path), *sorted(p for p in self.config.templates_dir.rglob("*") if p.is_file())]

        def stamp() -> str:
            return ",".join(str(p.stat().st_mtime_ns) if p.exists() else "-" for p in watched)

        def values(made: Rendered) -> dict[str, str]:
            return sample_values(self.config.newsletter.base_url, made.slug)

        try:
            return make_server(lambda: self.render(path), values, stamp, host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"{host}:{port} is in use: pick another with --port, or --port 0 for a free one") \
                    from None
            raise InputError(f"cannot serve on {host}:{port}: {exc.strerror}") from None

    @cached_property
    def templates(self) -> Templates:
        """The project's templates (then the package's), each compiled once for this newsletter."""
        from ..templates import Templates

        return Templates(self.config.templates_dir)

    def check_templates(self) -> None:
        """Compile every mail and web template, the project's or the package's: a RenderError if one is broken."""
        self.templates.check()

    def web_templates(self) -> jinja2.Environment:
        """The Jinja2 environment the web pages render with (`web/…` of the project's, else the package's)."""
        return self.templates.web

    def slug(self, issue: str | os.PathLike[str]) -> str:
        """The slug of an issue given as its file or as the slug itself (for issues whose file is gone)."""
        text = str(issue)
        if Path(issue).is_file() or text.endswith(".md") or "/" in text:
            return self.load(issue).slug  # a missing file: its one-line error
        return text

    def archive(self, list_name: str | None = None) -> list[ArchivedIssue]:
        """Issues that have been sent (to `list_name`, or to any list), newest first."""
        return self._archive.sent(self.store, list_name)

    def web_version(self, slug: str, list_name: str | None = None) -> str | None:
        """The web page of an issue sent to `list_name` (or to any list), with nobody's data in it; None when
        it was not sent there."""
        return self._archive.web_version(self.store, slug, list_name)

    def article(self, archived: ArchivedIssue) -> str | None:
        """An archived issue's body for a feed, with nobody's data in it."""
        return self._archive.article(archived)

    @cached_property
    def _archive(self) -> Archive:
        from ..archive import Archive

        return Archive(self.config, self.templates)
