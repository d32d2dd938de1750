"""`alerts`: what the operator is told when something goes wrong, and a test of where it goes."""

from __future__ import annotations

import click

from .base import State, cli, emit, pass_state


@cli.group("alerts")
def alerts_group() -> None:
    """Alerts to the operator ([alerts] email, webhook_url): each incident once."""


@alerts_group.command("test")
@click.pass_context
@pass_state
def test_command(state: State, ctx: click.Context) -> None:
    """Send a test alert to each configured channel; exits 1 if one could not be reached."""
    results = state.nl.alerts.test()
    for where, problem in results:
        emit(f"error: {problem}" if problem else f"{where}: sent", stderr=bool(problem))
    ctx.exit(1 if any(problem for _where, problem in results) else 0)


@alerts_group.command("list")
@pass_state
def list_command(state: State) -> None:
    """The incidents not over yet (a send that stopped moving, a wave of refusals…), oldest first."""
    for key in state.nl.alerts.open():
        emit(key)
