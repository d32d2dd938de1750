"""What every command shares: the group, the newsletter of `--config`, stop tokens, the consoles, printers."""

from __future__ import annotations

import functools
import gc
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from .. import __version__
from ..app import ENVIRONMENT_FILE, Newsletter, locate_config, missing_config
from ..errors import NewsletterError

if TYPE_CHECKING:
    from rich.console import Console

    from ..app import Report


class _Console:
    """A rich Console made at its first use: cron's `send --due` that finds nothing due prints nothing,
    and importing rich would be a good part of its start. Under `--log-format json` each print is one
    JSON log line instead (`logs`)."""

    json = False  # set for the command by --log-format

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None
        self._lock = threading.Lock()

    def _made(self) -> Console:
        with self._lock:
            if self._console is None:
                from rich.console import Console

                console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
                if not self._stderr and not console.is_terminal:  # tables in logs and pipes are not cut at 80
                    console = Console(highlight=False, soft_wrap=True, width=160)
                self._console = console
            return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)

    def print(self, *objects: Any, **options: Any) -> None:
        if not _Console.json:
            self._made().print(*objects, **options)
            return
        import io

        from rich.console import Console

        buffer = io.StringIO()
        Console(file=buffer, width=160, highlight=False, soft_wrap=True, no_color=True).print(*objects, **options)
        emit(buffer.getvalue().rstrip("\n"), stderr=self._stderr)

    def __enter__(self) -> Console:  # rich's live displays hold their console as a context
        return self._made().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._made().__exit__(*exc)


err = cast("Console", _Console(stderr=True))
out = cast("Console", _Console(stderr=False))


def json_logs() -> bool:
    """Whether this command writes JSON log lines (no progress bar, no colours)."""
    return _Console.json


def emit(text: str, *, stderr: bool = False, **fields: Any) -> None:
    """One line of the command's own: as it is, or under --log-format json as a JSON line with `fields`
    (issue, list, counts) and no address or link token in it."""
    if not _Console.json:
        click.echo(text, err=stderr)
        return
    from . import logs

    click.echo(logs.line(logs.level_of(text, stderr=stderr), text, **fields), err=stderr)


@contextmanager
def settled_heap() -> Iterator[None]:
    """For a long run: everything start-up made (the imported libraries, the config, the rendered
    issue) is out of the garbage collector's sight until it ends. A send or an import makes millions
    of short-lived rows, and every full collection would walk all of it again: a seventh of a send's
    CPU."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class Group(click.Group):
    """Turns a NewsletterError (or what the front door explains as one: a database away, a full disk)
    into one line on stderr and its exit code; bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            emit(f"error: {exc}", stderr=True)
            ctx.exit(exc.exit_code)
        except Exception as exc:
            state = ctx.find_object(State)
            known = state.explain(exc) if state is not None else None
            if known is None:
                raise
            emit(f"error: {known}", stderr=True)
            ctx.exit(known.exit_code)


class State:
    """The newsletter of `--config`, opened on first use and closed when the command ends."""

    def __init__(self, ctx: click.Context, config_path: str | None, log_format: str = "human") -> None:
        self.ctx, self.config_path, self.log_format = ctx, config_path, log_format
        self._newsletter: Newsletter | None = None
        self.shared_figures: list[str] = []  # the other processes' figures of this run (send --workers)

    def explain(self, exc: Exception) -> NewsletterError | None:
        return self._newsletter.explain(exc) if self._newsletter is not None else None

    @property
    def nl(self) -> Newsletter:
        if self._newsletter is None:
            self._newsletter = Newsletter.from_config(self.config_path)
            self.ctx.call_on_close(self._newsletter.close)
        return self._newsletter


pass_state = click.make_pass_decorator(State)
F = TypeVar("F", bound=Callable[..., Any])

# A process of `send --workers` started by the first: it leaves its figures for the first to publish.
share_figures_option = click.option("--share-figures", type=click.Path(dir_okay=False), hidden=True)

metrics_file_option = click.option(
    "--metrics-file", type=click.Path(dir_okay=False), metavar="PATH",
    help="When done, however it ends, write this run's figures here for node_exporter's textfile collector "
         "(PATH.prom, written whole); they also go to [metrics] pushgateway when one is set.")


def publish_metrics(state: State, path: str | None, command: str, share: str | None = None) -> None:
    """At the end of the command, however it ends: its figures to `path` and to the Pushgateway, as
    `command`'s (the Pushgateway's grouping key: send, bounces), with the other processes' of the same
    run added in. A process that one of `send --workers` started leaves them in `share` for it instead."""
    nl = state.nl
    if share:
        state.ctx.call_on_close(lambda: nl.monitoring.share(share))
        return
    if path is None and not nl.config.metrics.pushgateway:
        return

    def publish() -> None:
        for problem in nl.monitoring.publish(command, path, state.shared_figures):
            emit(f"warning: {problem}", stderr=True)

    state.ctx.call_on_close(publish)  # before nl's own close, which was registered first


class Stop:
    """The stop token of a command: asked as `stop()`, set by SIGTERM or SIGINT, remembering which came first.

    Only a flag: a signal handler runs between two bytecodes of the main thread, possibly inside a
    lock that thread holds (a `threading.Event.set` takes one), so the handler must take none.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def exit_code(self, code: int, pending: int) -> int:
        """A stop by a signal that left rows pending exits 128 + its number (130, 143), as shells report."""
        return 128 + self.signum if self.signum and pending else code


@contextmanager
def stop_on_signals(*, quiet: bool = False) -> Iterator[Stop]:
    """A Stop set by SIGTERM or SIGINT for the length of the block; the previous handlers come back after.

    Only process entry points (this CLI) install handlers: the library takes the Stop as a stop token.
    The handler only sets the flag; a thread says what was received (printing from a handler can
    re-enter the stream the main thread is writing).
    """
    stop = Stop()

    def handler(signum: int, _frame: object) -> None:
        if stop.signum is None:
            stop.signum = signum

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    done = threading.Event()

    def announce() -> None:
        while not done.wait(0.05):
            if stop.signum is not None:
                emit(f"received {signal.Signals(stop.signum).name}: finishing the batch in flight, then stopping",
                     stderr=True)
                return

    if not quiet:
        threading.Thread(target=announce, name="signal-notice", daemon=True).start()
    try:
        yield stop
    finally:
        done.set()
        for sig, old in previous.items():
            signal.signal(sig, old)


@click.group(cls=Group)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Configuration file (default: $NEWSLETTER_CONFIG, else ./config.toml, else "
         "$XDG_CONFIG_HOME/newsletter/config.toml; `newsletter config path` says which).",
)
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True,
              envvar="NEWSLETTER_LOG_FORMAT",
              help="json: each line the command and its loggers write is one JSON object (time, level, event, issue, "
                   "list, counts), with no address or link token in it; $NEWSLETTER_LOG_FORMAT sets it too.")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_format: str) -> None:
    """Render weekly Markdown issues to email, keep subscriber lists, and send each issue once."""
    ctx.obj = State(ctx, config_path, log_format)
    if log_format == "json":
        from . import logs

        ctx.call_on_close(functools.partial(setattr, _Console, "json", False))  # runs last: after every other line
        ctx.call_on_close(logs.use_json())
        _Console.json = True


@cli.group("config")
def config_group() -> None:
    """Where the configuration comes from."""


@config_group.command("path")
@pass_state
def config_path_command(state: State) -> None:
    """Which config file is in use, and why (the first of --config, $NEWSLETTER_CONFIG, ./config.toml,
    $XDG_CONFIG_HOME/newsletter/config.toml); exits 2 when there is none."""
    path, why = locate_config(state.config_path)
    if not path.is_file():
        raise missing_config(path, why)
    out.print(f"{path.absolute()}  ({why})", markup=False)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False), required=False)
@click.option("--systemd", "units", is_flag=True,
              help="Instead: write the systemd units of the project in use (a timer for `send --due`, or the "
                   "scheduler; the web app; the bounce mailbox) into FOLDER (default: systemd/ beside its config).")
@pass_state
def init(state: State, folder: str | None, units: bool) -> None:
    """Write a new project into FOLDER (default: here): config, templates, a sample issue and list."""
    if units:
        _write_units(state, folder)
        return
    folder = folder or "."
    from ..app import init_project  # its templates need Jinja2, which most commands never load

    written = init_project(folder)
    out.print(f"wrote {len(written)} files into {folder}:", markup=False)
    for path in written:
        out.print(f"  {path}", markup=False)
    config = Path(folder) / "config.toml"
    out.print("next: edit config.toml (name, from_email, base_url, postal_address), then try\n"
              f"  newsletter --config {config} subscribers import {Path(folder) / 'subscribers' / 'sample.csv'} "
              "--list weekly\n"
              f"  newsletter --config {config} send {Path(folder) / 'issues' / '2026-12-01.md'} --list weekly "
              "--dry-run\n"
              "the sample issue is a draft (draft: true), so `send --due` and the scheduler never send it; "
              "remove that line from an issue when it is ready to go at its slot", markup=False)


def _write_units(state: State, folder: str | None) -> None:
    import sys

    started = Path(sys.argv[0])
    # The command as it was started: the installed script, else this Python running the package.
    command = ([str(started.absolute())] if started.name == "newsletter" and started.is_file()
               else [sys.executable, "-m", "newsletter.cli"])
    written = state.nl.schedule.write_systemd(command, folder)
    out.print(f"wrote {len(written)} units into {written[0].parent}:", markup=False)
    for path in written:
        out.print(f"  {path.name}", markup=False)
    out.print(f"next: put the secrets in {ENVIRONMENT_FILE} (mode 600), copy the units to /etc/systemd/system/, "
              f"`systemctl daemon-reload`, then enable one way of sending: `systemctl enable --now "
              f"newsletter-due.timer` (cron's) or `newsletter-scheduler.service`, not both; and "
              f"`newsletter-web.service` for the web app", markup=False)


def warn(warnings: tuple[str, ...] | list[str]) -> None:
    from rich.markup import escape

    for warning in warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", markup=True)


def print_json(data: Any) -> None:
    """JSON for scripts on standard output: dataclasses as objects, times as ISO 8601."""
    import dataclasses
    import json

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        if hasattr(value, "isoformat"):
            return value.isoformat()
        raise TypeError(f"{type(value).__name__} is not JSON")

    click.echo(json.dumps(data, default=plain, indent=2, ensure_ascii=False))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")
compat_option = click.option("--compat", "compat_table", is_flag=True,
                             help="Print caniemail's table of the features used that some clients lack.")


def print_compatibility(report: Report | None, table: bool = False) -> None:
    """caniemail's verdict on the features the issue uses: one line, or with `table` a row each and a
    column per client. What is unexpected is a render warning either way."""
    if report is None:
        return
    if not table:
        out.print(f"{report.summary()} (--compat for the table)", markup=False)
        return
    from rich.table import Table

    rows = Table(title=f"Email client support (caniemail.com data of {report.data_date}): "
                       f"{len(report.findings)} of {report.features_used} features used are not supported everywhere",
                 title_justify="left", box=None, pad_edge=False, padding=(0, 1))
    rows.add_column("feature", overflow="fold")
    for client in report.clients:
        rows.add_column(client.replace(" ", "\n", 1), justify="center")
    rows.add_column("")
    for finding in report.findings:
        cells = ["no" if c in finding.unsupported else "part" if c in finding.partial else "" for c in report.clients]
        verdict = "by design" if finding.on_purpose else ("[yellow]check[/]" if finding.unsupported else "")
        rows.add_row(finding.title, *cells, verdict)
    out.print(rows)


def list_option(f: F) -> F:
    return click.option("--list", "list_name", help="The list (default: [schedule] list in the config).")(f)


def show_time(when: Any) -> str:
    """A time in the schedule's zone and in UTC."""
    import datetime as dt

    return f"{when:%Y-%m-%d %H:%M %Z} ({when.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC)"


