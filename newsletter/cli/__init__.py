"""The `newsletter` command: a thin click layer over the front door, one module per part; nothing imports it."""

from __future__ import annotations

from . import alerts, bounces, issues, schedule, sends, subscribers, web  # noqa: F401 - each registers its commands
from .base import Stop, cli, stop_on_signals

__all__ = ["Stop", "cli", "main", "stop_on_signals"]


def main() -> None:
    cli(prog_name="newsletter")
