"""The `newsletter` command: a thin click layer over the library; nothing imports it."""

from __future__ import annotations

import sys
import webbrowser
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from . import __version__, config as config_mod, content, render as render_mod
from .errors import NewsletterError
from .files import atomic_write

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


class _Group(click.Group):
    """Turns a NewsletterError into one line on stderr and its exit code; bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


class _State:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: config_mod.Config | None = None

    @property
    def config(self) -> config_mod.Config:
        if self._config is None:
            self._config = config_mod.load(self.config_path)
        return self._config


pass_state = click.make_pass_decorator(_State)


@click.group(cls=_Group)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar=config_mod.CONFIG_ENV,
    help="Configuration file (default: $NEWSLETTER_CONFIG, else ./config.toml).",
)
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Render weekly Markdown issues to email, keep subscriber lists, and send each issue once."""
    ctx.obj = _State(config_path)


def _warn(warnings: tuple[str, ...] | list[str]) -> None:
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}", markup=True)


def render_issue(state: _State, issue_path: str) -> render_mod.Rendered:
    cfg = state.config
    issue = content.parse(issue_path, base_url=cfg.newsletter.base_url)
    return render_mod.render(issue, cfg.newsletter, cfg.templates_dir)


@cli.command()
@click.argument("issue", type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out", show_default=True,
              help="Folder for <slug>.html and <slug>.txt.")
@pass_state
def render(state: _State, issue: str, out_dir: str) -> None:
    """Render ISSUE to HTML and plain text, with placeholders left in."""
    rendered = render_issue(state, issue)
    target = Path(out_dir)
    html_path, text_path = target / f"{rendered.slug}.html", target / f"{rendered.slug}.txt"
    atomic_write(html_path, rendered.html)
    atomic_write(text_path, rendered.text)
    out.print(f"{html_path}  {rendered.size / 1024:.1f} KB")
    out.print(f"{text_path}  {len(rendered.text.encode()) / 1024:.1f} KB")
    _warn(rendered.warnings)


@cli.command()
@click.argument("issue", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8025, show_default=True, type=int)
@click.option("--open", "open_browser", is_flag=True, help="Open the preview in a browser.")
@pass_state
def preview(state: _State, issue: str, host: str, port: int, open_browser: bool) -> None:
    """Serve ISSUE with sample subscriber values filled in, until Ctrl-C."""
    from .preview import make_server, sample_values

    rendered = render_issue(state, issue)
    _warn(rendered.warnings)
    server = make_server(rendered, sample_values(state.config.newsletter.base_url, rendered.slug), host, port)
    url = f"http://{host}:{server.server_address[1]}/"
    out.print(f"Previewing {rendered.slug} at {url} (plain text at {url}text); Ctrl-C stops.")
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:
    cli(prog_name="newsletter")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
