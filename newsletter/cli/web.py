"""`form` and `serve`: the signup form to paste elsewhere, and the web app."""

from __future__ import annotations

import click

from ..app import CONFIG_ENV
from .base import State, cli, pass_state, warn


@cli.command("form")
@click.argument("list_name", metavar="LIST")
@pass_state
def form_command(state: State, list_name: str) -> None:
    """Print the HTML signup form for LIST, to paste on your own site (its origin goes in [web] allowed_origins)."""
    html, notes = state.nl.links.form(list_name)
    click.echo(html, nl=False)
    warn(notes)


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--forwarded-allow-ips", help="Proxies whose X-Forwarded-For/-Proto are believed, comma-separated, "
                                            "'*' for all (default: [web] trusted_proxies).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
@pass_state
def serve(state: State, host: str, port: int, forwarded_allow_ips: str | None, log_level: str) -> None:
    """Serve subscribe, confirm, unsubscribe, the provider webhook, the archive and /healthz."""
    import copy
    import os

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    state.nl.config.secret()  # the same one-line errors as the app factory, before uvicorn starts
    state.nl.issues.check_templates()
    os.environ[CONFIG_ENV] = str(state.nl.config.path)  # the app factory below loads this config
    logging_config = copy.deepcopy(LOGGING_CONFIG)
    logging_config.setdefault("filters", {})["redact"] = {"()": "newsletter.web.security.RedactTokens"}
    logging_config["handlers"]["access"]["filters"] = ["redact"]
    if state.log_format == "json":
        from .logs import uvicorn_config

        logging_config = uvicorn_config(logging_config)
    trusted = forwarded_allow_ips or ",".join(state.nl.config.web.trusted_proxies)
    uvicorn.run("newsletter.web:app", factory=True, host=host, port=port, proxy_headers=True,
                forwarded_allow_ips=trusted, log_level=log_level, log_config=logging_config)


