"""`render` and `preview`: an issue as HTML and text, in files or in a browser."""

from __future__ import annotations

import threading
import time

import click

from .base import State, cli, compat_option, out, pass_state, print_compatibility, stop_on_signals, warn


@cli.command()
@click.argument("issue", type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out", show_default=True,
              help="Folder for <slug>.html and <slug>.txt.")
@compat_option
@pass_state
def render(state: State, issue: str, out_dir: str, compat_table: bool) -> None:
    """Render ISSUE to HTML and plain text, with placeholders left in."""
    rendered, html_path, text_path = state.nl.issues.write(issue, out_dir)
    out.print(f"{html_path}  {rendered.size / 1024:.1f} KB")
    out.print(f"{text_path}  {len(rendered.text.encode()) / 1024:.1f} KB")
    print_compatibility(rendered.compatibility, compat_table)
    warn(rendered.warnings)


@cli.command()
@click.argument("issue", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="0 takes a free port (printed).")
@click.option("--open", "open_browser", is_flag=True, help="Open the preview in a browser.")
@pass_state
def preview(state: State, issue: str, host: str, port: int, open_browser: bool) -> None:
    """Serve ISSUE with sample subscriber values filled in, until Ctrl-C; the page reloads when you save."""
    rendered, server = state.nl.issues.preview(issue, host, port)
    warn(rendered.warnings)
    url = f"http://{host}:{server.server_address[1]}/"
    out.print(f"Previewing {rendered.slug} at {url} (plain text at {url}text); Ctrl-C stops.")
    if open_browser:
        import webbrowser  # only for --open; every other command, cron's `send --due` above all, starts without it

        webbrowser.open(url)
    # Served from a thread, so that SIGINT and SIGTERM stop it however it was started (a background
    # job or nohup starts it with SIGINT ignored, and KeyboardInterrupt never comes).
    serving = threading.Thread(target=server.serve_forever, name="preview", daemon=True)
    with stop_on_signals(quiet=True) as stop:
        serving.start()
        try:
            while not stop() and serving.is_alive():
                time.sleep(0.1)
        finally:
            server.shutdown()
            server.server_close()


