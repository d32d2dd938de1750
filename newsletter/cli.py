"""The `newsletter` command: a thin click layer over the library; nothing imports it."""

from __future__ import annotations

import signal
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from . import __version__
from .app import CONFIG_ENV, STATUSES, Delivery, Newsletter, init_project
from .errors import NewsletterError

if TYPE_CHECKING:
    from .app import DryRunReport, DuePlan, IssueReport, Newsletter, Report, SendReport

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal:
    out = Console(highlight=False, soft_wrap=True, width=160)  # tables in logs and pipes are not cut at 80


PROBLEMS_SHOWN = 50  # failed and unknown rows `status` prints; --csv and --json list all


class _Group(click.Group):
    """Turns a NewsletterError (or what the front door explains as one: a database away, a full disk)
    into one line on stderr and its exit code; bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except Exception as exc:
            state = ctx.find_object(_State)
            known = state.explain(exc) if state is not None else None
            if known is None:
                raise
            click.echo(f"error: {known}", err=True)
            ctx.exit(known.exit_code)


class _State:
    """The newsletter of `--config`, opened on first use and closed when the command ends."""

    def __init__(self, ctx: click.Context, config_path: str | None) -> None:
        self.ctx, self.config_path = ctx, config_path
        self._newsletter: Newsletter | None = None

    def explain(self, exc: Exception) -> NewsletterError | None:
        return self._newsletter.explain(exc) if self._newsletter is not None else None

    @property
    def nl(self) -> Newsletter:
        if self._newsletter is None:
            self._newsletter = Newsletter.from_config(self.config_path)
            self.ctx.call_on_close(self._newsletter.close)
        return self._newsletter


pass_state = click.make_pass_decorator(_State)
F = TypeVar("F", bound=Callable[..., Any])


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
                click.echo(f"received {signal.Signals(stop.signum).name}: finishing the batch in flight, "
                           f"then stopping", err=True)
                return

    if not quiet:
        threading.Thread(target=announce, name="signal-notice", daemon=True).start()
    try:
        yield stop
    finally:
        done.set()
        for sig, old in previous.items():
            signal.signal(sig, old)


@click.group(cls=_Group)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar=CONFIG_ENV,
    help="Configuration file (default: $NEWSLETTER_CONFIG, else ./config.toml).",
)
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Render weekly Markdown issues to email, keep subscriber lists, and send each issue once."""
    ctx.obj = _State(ctx, config_path)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False), default=".")
def init(folder: str) -> None:
    """Write a new project into FOLDER (default: here): config, templates, a sample issue and list."""
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


def _warn(warnings: tuple[str, ...] | list[str]) -> None:
    from rich.markup import escape

    for warning in warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", markup=True)


def _print_json(data: Any) -> None:
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


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")


def _print_compatibility(report: Report | None) -> None:
    """caniemail's verdict on the features the issue uses, one row each, one column per client."""
    if report is None:
        return
    from rich.table import Table

    table = Table(title=f"Email client support (caniemail.com data of {report.data_date}): "
                        f"{len(report.findings)} of {report.features_used} features used are not supported everywhere",
                  title_justify="left", box=None, pad_edge=False, padding=(0, 1))
    table.add_column("feature", overflow="fold")
    for client in report.clients:
        table.add_column(client.replace(" ", "\n", 1), justify="center")
    table.add_column("")
    for finding in report.findings:
        cells = ["no" if c in finding.unsupported else "part" if c in finding.partial else "" for c in report.clients]
        verdict = "by design" if finding.on_purpose else ("[yellow]check[/]" if finding.unsupported else "")
        table.add_row(finding.title, *cells, verdict)
    out.print(table)


@cli.command()
@click.argument("issue", type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out", show_default=True,
              help="Folder for <slug>.html and <slug>.txt.")
@pass_state
def render(state: _State, issue: str, out_dir: str) -> None:
    """Render ISSUE to HTML and plain text, with placeholders left in."""
    rendered, html_path, text_path = state.nl.write_rendered(issue, out_dir)
    out.print(f"{html_path}  {rendered.size / 1024:.1f} KB")
    out.print(f"{text_path}  {len(rendered.text.encode()) / 1024:.1f} KB")
    _print_compatibility(rendered.compatibility)
    _warn(rendered.warnings)


@cli.command()
@click.argument("issue", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="0 takes a free port (printed).")
@click.option("--open", "open_browser", is_flag=True, help="Open the preview in a browser.")
@pass_state
def preview(state: _State, issue: str, host: str, port: int, open_browser: bool) -> None:
    """Serve ISSUE with sample subscriber values filled in, until Ctrl-C; the page reloads when you save."""
    rendered, server = state.nl.preview_server(issue, host, port)
    _warn(rendered.warnings)
    url = f"http://{host}:{server.server_address[1]}/"
    out.print(f"Previewing {rendered.slug} at {url} (plain text at {url}text); Ctrl-C stops.")
    if open_browser:
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


@cli.group()
def subscribers() -> None:
    """Manage subscribers, lists and suppressions."""


@subscribers.command("import")
@click.argument("file", type=click.Path())
@click.option("--list", "list_name", required=True, help="List to import into.")
@click.option("--status", type=click.Choice(["active", "unconfirmed"]), default="active", show_default=True,
              help="For rows without a status column of their own.")
@click.option("--strict", is_flag=True, help="Fail on the first bad row and change nothing.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False),
              help="Where to write rejected rows (default: FILE.rejects.csv beside FILE).")
@click.option("--delimiter", type=click.Choice(["comma", "semicolon", "tab"]),
              help="The field separator (default: found from the header).")
@click.option("--email-column", help="The column with the addresses (default: email, or Mailchimp's Email Address).")
@pass_state
def subscribers_import(state: _State, file: str, list_name: str, status: str, strict: bool,
                       rejects_path: str | None, delimiter: str | None, email_column: str | None) -> None:
    """Import subscribers from a CSV file (ours, Mailchimp's or listmonk's export, or any with an email column)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=err, transient=True, disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("importing", total=None)
        def show(rows: int) -> None:
            progress.update(task, description=f"importing: {rows:,} rows read")

        separator = {"comma": ",", "semicolon": ";", "tab": "\t"}.get(delimiter or "")
        report = state.nl.import_csv(file, list_name, status=status, strict=strict, rejects_path=rejects_path,
                                     progress=show, delimiter=separator, email_column=email_column)
    out.print(report.summary())
    for line, reason in report.reject_samples:
        err.print(f"{file}:{line}: rejected: {reason}", markup=False)
    for line, reason in report.kept_out_samples:
        err.print(f"{file}:{line}: kept out: {reason}", markup=False)
    if report.rejects_path:
        more = report.rejected - len(report.reject_samples)
        err.print(f"{report.rejected} rejected rows{f' ({more} more than shown)' if more > 0 else ''} "
                  f"written to {report.rejects_path}")


def _attrs(pairs: tuple[str, ...]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--attr")
        result[key.strip()] = value
    return result


@subscribers.command("add")
@click.argument("email")
@click.option("--list", "list_name", required=True)
@click.option("--name", default="")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="An attribute; repeatable.")
@click.option("--status", type=click.Choice(["active", "unconfirmed"]), default="active", show_default=True)
@pass_state
def subscribers_add(state: _State, email: str, list_name: str, name: str, attrs: tuple[str, ...], status: str) -> None:
    """Add one subscriber to a list (or update their name and attributes)."""
    subscriber, outcome = state.nl.add_subscriber(email, list_name, name=name, attributes=_attrs(attrs), status=status)
    shown = subscriber.email if subscriber else email.strip()
    out.print(f"{shown}: {outcome} on {list_name}", markup=False)


@subscribers.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Everything held on the person, as JSON (a data-access request).")
@pass_state
def subscribers_show(state: _State, email: str, as_json: bool) -> None:
    """Show one subscriber: name, attributes, lists, suppression and the history of their consent."""
    from rich.markup import escape

    if as_json:
        import json

        click.echo(json.dumps(state.nl.subscriber_record(email), indent=2, default=str, ensure_ascii=False))
        return
    s = state.nl.subscriber(email)
    out.print(f"email:      {escape(s.email)}")
    out.print(f"name:       {escape(s.name)}")
    out.print(f"since:      {s.created_at:%Y-%m-%d %H:%M} UTC")
    for key, value in sorted(s.attributes.items()):
        out.print(f"attr.{escape(key)}: {escape(value)}")
    for list_name, (status, at, source) in sorted(s.memberships.items()):
        out.print(f"list {list_name}: {status} since {at:%Y-%m-%d %H:%M} UTC ({escape(source)})")
    if s.suppressed:
        out.print(f"suppressed: {escape(s.suppressed)}")
    for h in state.nl.subscriber_history(email):
        where = f"list {h['list']}" if h["list"] else "address"
        change = f"{h['from_status'] or 'none'} -> {h['to_status']}"
        why = f": {h['reason']}" if h["reason"] else ""
        link = f" (the link in issue {h['issue']})" if h["issue"] else ""
        out.print(f"{h['at']:%Y-%m-%d %H:%M} UTC  {where}: {change} by {h['source']}{link}{why}", markup=False)


@subscribers.command("unsubscribe")
@click.argument("email")
@click.option("--list", "list_name", help="The list to leave.")
@click.option("--all", "all_lists", is_flag=True, help="Leave every list.")
@pass_state
def subscribers_unsubscribe(state: _State, email: str, list_name: str | None, all_lists: bool) -> None:
    """Unsubscribe an address from one list or from all of them."""
    if bool(list_name) == all_lists:
        raise click.UsageError("give exactly one of --list NAME or --all")
    changed = state.nl.unsubscribe_address(email, list_name)
    out.print(f"unsubscribed from {', '.join(changed)}" if changed else "already unsubscribed")


@subscribers.command("suppress")
@click.argument("email")
@click.option("--reason", required=True)
@pass_state
def subscribers_suppress(state: _State, email: str, reason: str) -> None:
    """Never mail an address again, on any list."""
    new = state.nl.suppress(email, reason)
    out.print("suppressed" if new else "already suppressed")


@subscribers.command("unsuppress")
@click.argument("email")
@click.option("--reason", required=True, help="Why (recorded in the person's history).")
@pass_state
def subscribers_unsuppress(state: _State, email: str, reason: str) -> None:
    """Take an address off the suppression list (undo a mistaken suppress)."""
    state.nl.unsuppress(email, reason)
    out.print("no longer suppressed; their memberships are as they were", markup=False)


@subscribers.command("remove")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def subscribers_remove(state: _State, email: str, yes: bool) -> None:
    """Erase a person (GDPR): only a hash stays, so they are never imported again."""
    if not yes:
        click.confirm(f"Erase {email} and everything stored about them?", abort=True, err=True)
    state.nl.erase(email)
    out.print("erased; a hashed suppression entry keeps the address from being imported again")


@subscribers.command("lists")
@_json_option
@pass_state
def subscribers_lists(state: _State, as_json: bool) -> None:
    """Count each list's members by status."""
    from rich.table import Table

    counts = state.nl.list_counts()
    if as_json:
        _print_json(counts)
        return
    table = Table("list", *STATUSES, "suppressed")
    for name, by_status in counts.items():
        table.add_row(name, *(f"{by_status[s]:,}" for s in (*STATUSES, "suppressed")))
    out.print(table)


@subscribers.command("export")
@click.option("--list", "list_name", help="The list to export.")
@click.option("--status", type=click.Choice([*(s.value for s in STATUSES), "suppressed", "all"]), default="active",
              show_default=True,
              help="active: who would be mailed; all: everyone, with their status.")
@click.option("--suppressions", is_flag=True, help="Export the suppression list instead of a list.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="File to write (default: standard output).")
@pass_state
def subscribers_export(state: _State, list_name: str | None, status: str, suppressions: bool,
                       out_path: str | None) -> None:
    """Export a list (or the suppression list) as CSV; importing it elsewhere restores it."""
    if suppressions == bool(list_name):
        raise click.UsageError("give --list NAME, or --suppressions")
    target = sys.stdout if out_path is None else out_path
    if suppressions:
        count = state.nl.export_suppressions(target)
    else:
        count = state.nl.export_csv(list_name or "", target, None if status == "all" else status)
    if out_path:
        err.print(f"{count} rows written to {out_path}")


def _list_option(f: F) -> F:
    return click.option("--list", "list_name", help="The list (default: [schedule] list in the config).")(f)


def _print_dry_run(report: DryRunReport) -> None:
    out.print(f"Dry run of {report.issue} to list {report.list_name}: nothing was sent or recorded.")
    out.print(f"  recipients:   {report.recipients:,} in {report.batches:,} batches of up to {report.batch_size:,}")
    if report.already_sent:
        out.print(f"  already sent: {report.already_sent:,}")
    for reason, count in sorted(report.skipped_reasons.items()):
        out.print(f"  skipped:      {count:,} {reason}")
    out.print(f"  message size: HTML {report.html_bytes / 1024:.1f} KB, text {report.text_bytes / 1024:.1f} KB")
    for path in report.written:
        out.print(f"  wrote {path}")
    _print_compatibility(report.compatibility)
    _warn(report.warnings)


def _print_plan(plan: DuePlan) -> None:
    """What the due rule makes of each issue: due now, missed, left alone (and how to send by hand)."""
    for item in plan.due:
        out.print(f"due now: {item.path} ({item.why})", markup=False)
    for passed in plan.missed:
        out.print(f"MISSED: {passed.pin.job_id if passed.pin else passed.path} ({passed.why}): "
                  f"`send --due` reports it and exits 1", markup=False)
    for passed in plan.skipped:
        out.print(f"{passed.path}: {passed.why}", markup=False)


def _print_due(plan: DuePlan, nl: Newsletter, name: str, out_dir: str | None, limit: int) -> None:
    if not plan.due:
        out.print(f"nothing is due for {name} now", markup=False)
    _print_plan(plan)
    if plan.next_slot is not None:
        what = f"sends {plan.next_issue}" if plan.next_issue else "nothing due for it yet"
        out.print(f"next weekly slot for {name}: {_when(plan.next_slot)}, {what}", markup=False)
    for item in plan.due:
        _print_dry_run(nl.dry_run(item.path, name, out_dir=out_dir, limit=limit))


def _print_send(report: SendReport, resume: str, signal_name: str) -> None:
    run, c = report.this_run, report.counts
    if not sum(run.values()) and not c[Delivery.PENDING]:
        out.print(f"nothing to send: {report.issue} has no pending recipients on {report.list_name}"
                  + (f" ({c[Delivery.SENT]:,} already sent)" if c[Delivery.SENT] else ""))
    else:
        rate = run[Delivery.SENT] / report.duration if report.duration > 0 else 0.0
        out.print(f"{report.issue} to {report.list_name}: this run sent {run[Delivery.SENT]:,}, "
                  f"failed {run[Delivery.FAILED]:,}, unknown {run[Delivery.UNKNOWN]:,}, "
                  f"skipped {run[Delivery.SKIPPED]:,} in {report.duration:.1f} s ({rate:,.0f}/s)")
        out.print(f"in total: sent {c[Delivery.SENT]:,}, failed {c[Delivery.FAILED]:,}, "
                  f"unknown {c[Delivery.UNKNOWN]:,}, skipped {c[Delivery.SKIPPED]:,}, pending {c[Delivery.PENDING]:,}")
        if run["deferred"]:
            out.print(f"deferred {run['deferred']:,}: the server refused them for now (4xx); they stay pending and "
                      f"the next run tries them again")
    for reason, count in sorted(report.skipped_reasons.items()):
        out.print(f"  skipped {count:,}: {reason}")
    if report.stopped and c[Delivery.PENDING]:
        why = f"by {signal_name}" if signal_name else f"early: {report.stopped}"
        out.print(f"stopped {why} with {c[Delivery.PENDING]:,} pending; run `{resume}` again to continue", markup=False)
    elif report.stopped:
        out.print(f"stopped early: {report.stopped}")
    if report.recovered:
        err.print(f"[bold red]{report.recovered:,} messages were in flight when an earlier run died: marked unknown[/]",
                  markup=True)
    if c[Delivery.UNKNOWN]:
        err.print(
            f"[bold red]UNKNOWN: {c[Delivery.UNKNOWN]:,} messages may or may not have been delivered.[/] They are not "
            f"re-sent; see `newsletter status`, and re-send them with --resend-unknown if you are sure.", markup=True)
    for email, state_, error, _attempts in report.problems[:20]:
        err.print(f"  {state_}: {email}: {error}", markup=False)


class _Progress:
    """A rich progress bar (count, rate, ETA) on a terminal, a log line every few seconds elsewhere."""

    def __init__(self, label: str) -> None:
        import time

        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task) -> Text:  # type: ignore[no-untyped-def]
                return Text(f"{task.speed or 0:,.0f}/s")

        self._time = time.monotonic
        self._last = 0.0
        self.label = label
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                            TimeRemainingColumn(), console=err, transient=True) if err.is_terminal else None
        self.task: Any = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.bar.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            if self.task is None:
                self.task = self.bar.add_task(self.label, total=total)
            self.bar.update(self.task, completed=done)
        elif self._time() - self._last >= 5 or done >= total:
            self._last = self._time()
            click.echo(f"{self.label}: {done:,}/{total:,}", err=True)


@cli.command("send")
@click.argument("issue", type=click.Path(), required=False)
@_list_option
@click.option("--due", is_flag=True,
              help="Send pinned sends whose time has come, then the issue whose weekly slot is open (for cron; "
                   "drafts never; a missed slot is reported, exit 1); never asks. With --dry-run: say what and why.")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send and record nothing.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="With --dry-run: write the provider's preview here (sample .eml files; SendGrid's request body).")
@click.option("--limit", type=click.IntRange(min=1),
              help="Send at most N now (with --dry-run: messages to write, default 3).")
@click.option("--to", "to_addresses", multiple=True, metavar="ADDRESS",
              help="Send one test copy to this address instead (repeatable); not recorded.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for cron).")
@click.option("--max-rate", type=click.FloatRange(min=0.1), help="At most N messages per second.")
@click.option("--resend-unknown", is_flag=True, help="Re-send messages whose delivery is unknown after a crash.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the dry run as JSON for scripts.")
@pass_state
def send_command(state: _State, issue: str | None, list_name: str | None, due: bool, dry_run: bool,
                 out_dir: str | None, limit: int | None, to_addresses: tuple[str, ...], yes: bool,
                 max_rate: float | None, resend_unknown: bool, as_json: bool) -> None:
    """Send ISSUE to a list, continuing where an earlier run stopped; never twice to anyone."""
    nl = state.nl
    if due:
        if issue or to_addresses:
            raise click.UsageError("--due picks the issue itself: give no ISSUE or --to with it")
        if dry_run:
            name = nl.list_name(list_name)
            _print_due(nl.plan_due(name), nl, name, out_dir, limit or 3)
            return
        with stop_on_signals() as stop:
            run = nl.send_due(list_name, stop=stop)
        if run.line:
            out.print(run.line, markup=False)
        pending = run.report.counts.get(Delivery.PENDING, 0) if run.report else 0
        if stop.signum and pending:
            out.print(f"stopped by {signal.Signals(stop.signum).name} with {pending:,} pending: the next "
                      f"`send --due` continues while its slot is open, or `newsletter send` it by hand", markup=False)
        sys.exit(stop.exit_code(run.exit_code, pending))
    if not issue:
        raise click.UsageError("give the ISSUE file to send (or --due)")
    name = nl.list_name(list_name)
    if dry_run:
        preview = nl.dry_run(issue, name, out_dir=out_dir, limit=limit or 3)
        if as_json:
            _print_json(preview)
        else:
            _print_dry_run(preview)
        return
    if as_json:
        raise click.UsageError("--json goes with --dry-run (a send prints its progress and summary)")
    mailing = nl.mailing(issue, name)
    if to_addresses:
        results = [nl.send_test_copy(mailing, address) for address in to_addresses]
        for address, result in zip(to_addresses, results, strict=True):
            out.print(f"test copy to {address}: {result.status}" + (f" ({result.error})" if result.error else ""),
                      markup=False)
        _warn(mailing.rendered.warnings)
        sys.exit(0 if all(result.status == "sent" for result in results) else 1)  # the provider's Result literal
    _warn(mailing.rendered.warnings)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not on a terminal: pass --yes to send without confirmation")
        recipients = nl.recipients(mailing)
        if recipients:
            click.confirm(f"Send {mailing.rendered.slug!r} to {recipients:,} recipients on {name} via "
                          f"{nl.config.provider.backend}?", abort=True, err=True)
    with stop_on_signals() as stop, _Progress(f"sending {mailing.rendered.slug}") as progress:
        report = nl.send(mailing, limit=limit, max_rate=max_rate, resend_unknown=resend_unknown,
                         progress=progress, stop=stop)
    _print_send(report, f"newsletter send {issue} --list {name} --yes",
                signal.Signals(stop.signum).name if stop.signum else "")
    sys.exit(stop.exit_code(report.exit_code, report.counts.get(Delivery.PENDING, 0)))


@cli.command("report")
@click.argument("issue", required=False)
@_list_option
@click.option("--all", "every", is_flag=True, help="Every send, newest first, to compare them.")
@_json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: one row per send, counts then rates.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Write one self-contained page with plots (a 72-hour timeline; rates across sends).")
@pass_state
def report_command(state: _State, issue: str | None, list_name: str | None, every: bool, as_json: bool,
                   as_csv: bool, html_path: str | None) -> None:
    """What became of ISSUE (file or slug; default: the newest send): delivered, bounced, complained,
    unsubscribed, unique opens and clicks with rates, and the top links."""
    if issue and every:
        raise click.UsageError("give an ISSUE or --all, not both")
    nl = state.nl
    reports = nl.report(issue, None if list_name is None else nl.list_name(list_name), every=every)
    if html_path:
        err.print(f"wrote {nl.write_report_html(reports, html_path)}")
    if as_json:
        _print_json([r.as_dict() for r in reports])
    elif as_csv:
        click.echo(nl.report_csv(reports), nl=False)
    else:
        _print_reports(reports)


def _print_reports(reports: list[IssueReport]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, padding=(0, 1))
    for column in ("issue", "list", *reports[0].table_cells()):  # a report is never of no send
        table.add_column(column, justify="left" if column in ("issue", "list") else "right")
    for r in reports:
        table.add_row(r.issue, r.list_name, *r.table_cells().values())
    out.print(table)
    for r in reports:
        if r.top_links:
            out.print(f"top links of {r.issue} to {r.list_name}:", markup=False)
            for link in r.top_links:
                out.print(f"  {link.clicks:>6,} clicks  {link.people:>6,} people  {link.url}", markup=False)


@cli.command("form")
@click.argument("list_name", metavar="LIST")
@pass_state
def form_command(state: _State, list_name: str) -> None:
    """Print the HTML signup form for LIST, to paste on your own site (its origin goes in [web] allowed_origins)."""
    html, notes = state.nl.signup_form(list_name)
    click.echo(html, nl=False)
    _warn(notes)


@cli.command("status")
@click.argument("issue")
@_list_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts, with every failed and unknown row.")
@click.option("--csv", "as_csv", is_flag=True, help="Print every failed and unknown row as CSV.")
@pass_state
def status_command(state: _State, issue: str, list_name: str | None, as_json: bool, as_csv: bool) -> None:
    """Who got ISSUE (file or slug), who failed and why, and what is still pending or unknown."""
    status = state.nl.status(issue, list_name, every_problem=as_json or as_csv)
    if as_json:
        _print_json(status)
        return
    if as_csv:
        state.nl.problems_csv(status, sys.stdout)
        return
    if not status.started:
        out.print(f"{status.issue} has not been sent to {status.list_name}")
        return
    counts = status.counts
    out.print(f"{status.issue} to {status.list_name}: " + ", ".join(f"{s} {n:,}" for s, n in counts.items()))
    out.print("provider events: " + ", ".join(f"{kind} {n:,}" for kind, n in status.events.items()))
    if counts[Delivery.UNKNOWN]:
        err.print(f"[bold red]{counts[Delivery.UNKNOWN]:,} unknown[/]: may or may not have been delivered; "
                  f"`send --resend-unknown` re-sends them", markup=True)
    for email, state_, error, attempts in status.problems[:PROBLEMS_SHOWN]:
        out.print(f"  {state_}: {email} (attempts {attempts}): {error}", markup=False)
    shown = min(len(status.problems), PROBLEMS_SHOWN)
    if counts[Delivery.FAILED] + counts[Delivery.UNKNOWN] > shown:
        out.print(f"  ({counts[Delivery.FAILED] + counts[Delivery.UNKNOWN] - shown:,} more failed or unknown rows: "
                  f"--csv or --json lists them all)", markup=False)
    for h in status.holders:
        if h.gone:
            who = f"worker {h.worker} on {h.host} (pid {h.pid})" if h.worker is not None else "no worker"
            err.print(f"[bold red]{h.rows:,} in flight held by {who}, which is gone[/] ({h.gone}): the next `send` "
                      f"reports them unknown", markup=True)
    for w in status.workers:
        seconds = max((w["heartbeat_at"] - w["started_at"]).total_seconds(), 1e-9)
        out.print(f"worker {w['id']} on {w['host']} (pid {w['pid']}): sent {w['sent']:,} since "
                  f"{w['started_at']:%H:%M:%S} UTC ({w['sent'] / seconds:,.0f}/s), last heartbeat "
                  f"{w['heartbeat_at']:%H:%M:%S} UTC", markup=False)


class _ScheduleGroup(_Group):
    """`schedule ISSUE --at TIME` pins a send; `schedule list` and `schedule cancel ID` manage them."""

    def resolve_command(self, ctx: click.Context, args: list[str]):  # type: ignore[no-untyped-def]
        if args and args[0] not in self.commands:
            args = ["add", *args]
        return super().resolve_command(ctx, args)


@cli.group(cls=_ScheduleGroup)
def schedule() -> None:
    """Pin an issue to a time, list what is scheduled, cancel a pinned send."""


@schedule.command("add", hidden=True)
@click.argument("issue", type=click.Path())
@click.option("--at", "at", required=True, help="'YYYY-MM-DD HH:MM' in the schedule's time zone.")
@_list_option
@pass_state
def schedule_add(state: _State, issue: str, at: str, list_name: str | None) -> None:
    """Pin a send of ISSUE to a time."""
    job_id, when = state.nl.pin(issue, at, list_name)
    out.print(f"{job_id}: {issue} at {_when(when)}", markup=False)


def _when(when: Any) -> str:
    """A time in the schedule's zone and in UTC."""
    import datetime as dt

    return f"{when:%Y-%m-%d %H:%M %Z} ({when.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC)"


@schedule.command("list")
@pass_state
def schedule_list_command(state: _State) -> None:
    """What is scheduled and when it runs next, in the schedule's zone and UTC."""
    scheduled = state.nl.scheduled()
    for run in scheduled.runs:
        out.print(f"{run.id}  " + (f"next at {_when(run.next_run)}" if run.next_run else "paused")
                  + f"  {run.description}", markup=False)
    if scheduled.plan is not None:
        _print_plan(scheduled.plan)


@schedule.command("cancel")
@click.argument("job_id")
@pass_state
def schedule_cancel(state: _State, job_id: str) -> None:
    """Remove a pinned send."""
    state.nl.cancel(job_id)
    out.print(f"cancelled {job_id}", markup=False)


@cli.command("scheduler")
@_list_option
@pass_state
def scheduler_command(state: _State, list_name: str | None) -> None:
    """Run the weekly schedule and pinned sends until SIGTERM or Ctrl-C."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)  # not every wake-up
    with stop_on_signals() as stop:
        state.nl.run_scheduler(list_name, stop=stop)


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--forwarded-allow-ips", help="Proxies whose X-Forwarded-For/-Proto are believed, comma-separated, "
                                            "'*' for all (default: [web] trusted_proxies).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
@pass_state
def serve(state: _State, host: str, port: int, forwarded_allow_ips: str | None, log_level: str) -> None:
    """Serve subscribe, confirm, unsubscribe, the provider webhook, the archive and /healthz."""
    import copy
    import os

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    state.nl.config.secret()  # the same one-line errors as the app factory, before uvicorn starts
    state.nl.check_templates()
    os.environ[CONFIG_ENV] = str(state.nl.config.path)  # the app factory below loads this config
    logging_config = copy.deepcopy(LOGGING_CONFIG)
    logging_config.setdefault("filters", {})["redact"] = {"()": "newsletter.web.security.RedactTokens"}
    logging_config["handlers"]["access"]["filters"] = ["redact"]
    trusted = forwarded_allow_ips or ",".join(state.nl.config.web.trusted_proxies)
    uvicorn.run("newsletter.web:app", factory=True, host=host, port=port, proxy_headers=True,
                forwarded_allow_ips=trusted, log_level=log_level, log_config=logging_config)


def main() -> None:
    cli(prog_name="newsletter")


if __name__ == "__main__":  # pragma: no cover
    main()
