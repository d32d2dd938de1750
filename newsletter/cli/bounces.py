"""`bounces fetch`: read the bounce mailbox that SMTP's bounces and complaints come back to."""

from __future__ import annotations

import click

from .base import State, cli, emit, metrics_file_option, pass_state, publish_metrics


@cli.group("bounces")
def bounces_group() -> None:
    """The bounce mailbox ([bounces.mailbox]): what SMTP's bounces and complaints come back to."""


@bounces_group.command("fetch")
@metrics_file_option
@click.pass_context
@pass_state
def fetch_command(state: State, ctx: click.Context, metrics_file: str | None) -> None:
    """Read every waiting message once: hard bounces and complaints suppress, soft bounces count toward
    [bounces] soft_limit, out-of-office replies are ignored, and what no rule understands is moved to
    the unparsed folder for a person. Quiet when there is nothing; exits 1 when mail was refused
    because of the sender's own setup (DMARC, authentication, a blocklisted IP): fix that first."""
    publish_metrics(state, metrics_file, "bounces")
    report = state.nl.bounces.fetch()
    if report.summary:
        emit(report.summary, counts=dict(report.classes))
    for warning in report.warnings:
        emit(f"warning: {warning}", stderr=True)
    ctx.exit(report.exit_code)
