"""`send`, `status` and `report`: an issue to a list, where its send stands, and what became of it."""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from ..app import Delivery
from .base import (
    State,
    Stop,
    cli,
    compat_option,
    emit,
    err,
    json_logs,
    json_option,
    list_option,
    metrics_file_option,
    out,
    pass_state,
    print_compatibility,
    print_json,
    publish_metrics,
    settled_heap,
    share_figures_option,
    show_time,
    stop_on_signals,
    warn,
)
from .schedule import print_plan
from .workers import Helpers, count as worker_count

if TYPE_CHECKING:
    from ..app import DryRunReport, DuePlan, IssueReport, Mailing, Newsletter, SendReport, SendStatus

PROBLEMS_SHOWN = 50  # failed and unknown rows `status` prints; --csv and --json list all

def print_dry_run(report: DryRunReport, compat_table: bool = False) -> None:
    emit(f"Dry run of {report.issue} to list {report.list_name}: nothing was sent or recorded.", issue=report.issue,
         list=report.list_name, counts={"recipients": report.recipients, "batches": report.batches,
                                        "already_sent": report.already_sent, **report.skipped_reasons})
    out.print(f"  recipients:   {report.recipients:,} in {report.batches:,} batches of up to {report.batch_size:,}")
    if report.already_sent:
        out.print(f"  already sent: {report.already_sent:,}")
    for reason, count in sorted(report.skipped_reasons.items()):
        out.print(f"  skipped:      {count:,} {reason}")
    out.print(f"  message size: HTML {report.html_bytes / 1024:.1f} KB, text {report.text_bytes / 1024:.1f} KB")
    for path in report.written:
        out.print(f"  wrote {path}")
    print_compatibility(report.compatibility, compat_table)
    warn(report.warnings)


def _print_due(plan: DuePlan, nl: Newsletter, name: str, out_dir: str | None, limit: int) -> None:
    if not plan.due:
        out.print(f"nothing is due for {name} now", markup=False)
    print_plan(plan)
    if plan.next_slot is not None:
        out.print(f"next weekly slot for {name}: {show_time(plan.next_slot)}, {plan.next_sends}", markup=False)
    for item in plan.due:
        print_dry_run(nl.sends.dry_run(item.path, name, out_dir=out_dir, limit=limit))


def _print_send(report: SendReport, resume: str, signal_name: str) -> None:
    run, c = report.this_run, report.counts
    if not sum(run.values()) and not c[Delivery.PENDING]:
        out.print(f"nothing to send: {report.issue} has no pending recipients on {report.list_name}"
                  + (f" ({c[Delivery.SENT]:,} already sent)" if c[Delivery.SENT] else ""))
    else:
        rate = run[Delivery.SENT] / report.duration if report.duration > 0 else 0.0
        emit(f"{report.issue} to {report.list_name}: this run sent {run[Delivery.SENT]:,}, "
             f"failed {run[Delivery.FAILED]:,}, unknown {run[Delivery.UNKNOWN]:,}, "
             f"skipped {run[Delivery.SKIPPED]:,} in {report.duration:.1f} s ({rate:,.0f}/s)",
             issue=report.issue, list=report.list_name, counts=dict(run))
        emit(f"in total: sent {c[Delivery.SENT]:,}, failed {c[Delivery.FAILED]:,}, "
             f"unknown {c[Delivery.UNKNOWN]:,}, skipped {c[Delivery.SKIPPED]:,}, pending {c[Delivery.PENDING]:,}",
             issue=report.issue, list=report.list_name, counts=dict(c))
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
        bar = err.is_terminal and not json_logs()
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                            TimeRemainingColumn(), console=err, transient=True) if bar else None
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
            emit(f"{self.label}: {done:,}/{total:,}", stderr=True)


@cli.command("send")
@click.argument("issue", type=click.Path(), required=False)
@list_option
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
@compat_option
@click.option("--segment", default="", metavar="EXPR|NAME",
              help="Only the members matching a segment expression, or a [segments.NAME] of the config; fixed when "
                   "the send starts.")
@click.option("--workers", default="1", metavar="N|auto",
              help="Send as N processes sharing the work through the ledger (auto: one per core), for a send that "
                   "one core cannot keep up with; --max-rate is shared among them.")
@metrics_file_option
@share_figures_option
@pass_state
def send_command(state: State, issue: str | None, list_name: str | None, due: bool, dry_run: bool,
                 out_dir: str | None, limit: int | None, to_addresses: tuple[str, ...], yes: bool,
                 max_rate: float | None, resend_unknown: bool, as_json: bool, compat_table: bool, segment: str,
                 workers: str, metrics_file: str | None, share_figures: str | None) -> None:
    """Send ISSUE to a list, continuing where an earlier run stopped; never twice to anyone."""
    nl = state.nl
    if not dry_run:
        publish_metrics(state, metrics_file, "send", share_figures)
    list_name, segment = nl.sends.segment(list_name, segment)
    if due:
        if issue or to_addresses:
            raise click.UsageError("--due picks the issue itself: give no ISSUE or --to with it")
        _send_due(nl, list_name, dry_run, out_dir, limit)
    if not issue:
        raise click.UsageError("give the ISSUE file to send (or --due)")
    name = nl.config.list_or_default(list_name)
    if dry_run:
        preview = nl.sends.dry_run(issue, name, out_dir=out_dir, limit=limit or 3, segment=segment)
        if as_json:
            print_json(preview)
        else:
            print_dry_run(preview, compat_table)
        return
    if as_json:
        raise click.UsageError("--json goes with --dry-run (a send prints its progress and summary)")
    processes = _processes(workers, limit, to_addresses, max_rate)
    mailing = nl.sends.mailing(issue, name)
    warn(mailing.rendered.warnings)
    if to_addresses:
        _send_test_copies(nl, mailing, to_addresses)
    if not yes:
        _confirm(nl, mailing, segment)
    _send(state, mailing, issue, name, limit, max_rate, resend_unknown, segment, processes)


def _send(state: State, mailing: Mailing, issue: str, name: str, limit: int | None, max_rate: float | None,
          resend_unknown: bool, segment: str, processes: int) -> None:
    """The send itself (with `processes` - 1 others beside this one), its report, and the exit."""
    nl = state.nl
    share = max_rate / processes if max_rate else None
    with settled_heap(), stop_on_signals() as stop, _Progress(f"sending {mailing.rendered.slug}") as progress:
        helpers = _helpers(nl, issue, name, segment, resend_unknown, share, processes - 1, stop)
        if helpers is not None:
            state.shared_figures = helpers.figures  # filled as they end: theirs go into this one's metrics
        try:
            report = nl.sends.send(mailing, limit=limit, max_rate=share, resend_unknown=resend_unknown,
                                   progress=progress, stop=stop, segment=segment)
        except BaseException:
            if helpers is not None:
                helpers.stop()
            raise
        others = helpers.wait() if helpers is not None else []
    if others:  # the whole send, as the ledger has it once every worker is done
        report.counts = nl.sends.status(issue, name).counts
    _print_send(report, f"newsletter send {issue} --list {name} --yes",
                signal.Signals(stop.signum).name if stop.signum else "")
    code = stop.exit_code(report.exit_code, report.counts.get(Delivery.PENDING, 0))
    for number, (other, line) in enumerate(others, start=2):
        if line:
            err.print(f"worker {number} of {processes}: {line}", markup=False)
        if other == 2 or other >= 128:  # an error, or a signal that stopped it with rows pending
            code = max(code, other)
    if others:
        out.print(f"{processes} worker processes shared the send")
    sys.exit(code)


def _processes(workers: str, limit: int | None, to_addresses: tuple[str, ...], max_rate: float | None) -> int:
    processes = worker_count(workers)
    if processes > 1 and (limit is not None or to_addresses):
        raise click.UsageError("--workers goes with a whole send, not with --limit or --to")
    if max_rate and max_rate / processes < 0.1:
        raise click.UsageError(f"--max-rate {max_rate:g} shared by {processes} workers is under 0.1 each")
    return processes


def _helpers(nl: Newsletter, issue: str, name: str, segment: str, resend_unknown: bool, share: float | None,
             number: int, stop: Stop) -> Helpers | None:
    """The other worker processes of `--workers`, already sending, stopped with this one's signal."""
    if number < 1:
        return None
    arguments = ["--config", str(nl.config.path), "send", issue, "--list", name, "--yes"]
    arguments += ["--segment", segment] if segment else []
    arguments += ["--resend-unknown"] if resend_unknown else []
    arguments += ["--max-rate", repr(share)] if share else []
    helpers = Helpers(arguments, number)
    helpers.forward(lambda: stop.signum)
    return helpers


def _send_due(nl: Newsletter, list_name: str | None, dry_run: bool, out_dir: str | None, limit: int | None) -> None:
    """`send --due`: what cron runs (or, with --dry-run, what it would send and why); exits."""
    if dry_run:
        name = nl.config.list_or_default(list_name)
        _print_due(nl.schedule.plan(name), nl, name, out_dir, limit or 3)
        sys.exit(0)
    with settled_heap(), stop_on_signals() as stop:
        run = nl.schedule.due(list_name, stop=stop)
    if run.line:
        done = run.report
        emit(run.line, issue=done.issue if done else None, list=done.list_name if done else None,
             counts=dict(done.counts) if done else None)
    pending = run.report.counts.get(Delivery.PENDING, 0) if run.report else 0
    if stop.signum and pending:
        out.print(f"stopped by {signal.Signals(stop.signum).name} with {pending:,} pending: the next "
                  f"`send --due` continues while its slot is open, or `newsletter send` it by hand", markup=False)
    sys.exit(stop.exit_code(run.exit_code, pending))


def _send_test_copies(nl: Newsletter, mailing: Mailing, to_addresses: tuple[str, ...]) -> None:
    """`--to`: one test copy to each address; exits 0 only if every one was accepted."""
    results = [nl.sends.test_copy(mailing, address) for address in to_addresses]
    for address, result in zip(to_addresses, results, strict=True):
        out.print(f"test copy to {address}: {result.status}" + (f" ({result.error})" if result.error else ""),
                  markup=False)
    sys.exit(0 if all(result.status == "sent" for result in results) else 1)  # the provider's Result literal


def _confirm(nl: Newsletter, mailing: Mailing, segment: str) -> None:
    """Ask before a real send; refuse to guess when there is nobody to ask."""
    if not sys.stdin.isatty():
        raise click.UsageError("not on a terminal: pass --yes to send without confirmation")
    recipients = nl.sends.recipients(mailing, segment=segment)
    if recipients:
        click.confirm(f"Send {mailing.rendered.slug!r} to {recipients:,} recipients on {mailing.list_name} via "
                      f"{nl.config.provider.backend}?", abort=True, err=True)


@cli.command("report")
@click.argument("issue", required=False)
@list_option
@click.option("--all", "every", is_flag=True, help="Every send, newest first, to compare them.")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: one row per send, counts then rates.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Write one self-contained page with plots (a 72-hour timeline; rates across sends).")
@pass_state
def report_command(state: State, issue: str | None, list_name: str | None, every: bool, as_json: bool,
                   as_csv: bool, html_path: str | None) -> None:
    """What became of ISSUE (file or slug; default: the newest send): delivered, bounced, complained,
    unsubscribed, unique opens and clicks with rates, and the top links."""
    if issue and every:
        raise click.UsageError("give an ISSUE or --all, not both")
    nl = state.nl
    reports = nl.sends.report(issue, list_name, every=every)
    if html_path:
        err.print(f"wrote {nl.sends.write_report_html(reports, html_path)}")
    if as_json:
        print_json([r.as_dict() for r in reports])
    elif as_csv:
        click.echo(nl.sends.report_csv(reports), nl=False)
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
        if r.segment:
            out.print(f"{r.issue} to {r.list_name} went to the segment {r.segment}", markup=False)
        if r.bounce_reasons:
            out.print(f"bounces of {r.issue} to {r.list_name}, by class and reason:", markup=False)
            for kind, code, people, words in r.bounce_reasons:
                note = "  (mail rejected because of the sender's setup)" if kind == "blocked" else ""
                out.print(f"  {people:>6,} {kind:<10} {code or '-':<8} {words}{note}", markup=False)
        if r.top_links:
            out.print(f"top links of {r.issue} to {r.list_name}:", markup=False)
            for link in r.top_links:
                out.print(f"  {link.clicks:>6,} clicks  {link.people:>6,} people  {link.url}", markup=False)


def _sender_side(status: SendStatus) -> None:
    """Said once per status: mail refused for our own setup is not the recipients' fault, and needs fixing."""
    if status.events.get("blocked"):
        err.print(f"[bold red]mail to {status.events['blocked']:,} people was rejected because of the sender's "
                  f"setup[/] (DMARC, authentication, a blocklisted IP): `newsletter report` gives the servers' words",
                  markup=True)


@cli.command("status")
@click.argument("issue")
@list_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts, with every failed and unknown row.")
@click.option("--csv", "as_csv", is_flag=True, help="Print every failed and unknown row as CSV.")
@pass_state
def status_command(state: State, issue: str, list_name: str | None, as_json: bool, as_csv: bool) -> None:
    """Who got ISSUE (file or slug), who failed and why, and what is still pending or unknown."""
    status = state.nl.sends.status(issue, list_name, every_problem=as_json or as_csv)
    if as_json:
        print_json(status)
        return
    if as_csv:
        state.nl.sends.problems_csv(status, sys.stdout)
        return
    if not status.started:
        out.print(f"{status.issue} has not been sent to {status.list_name}")
        return
    counts = status.counts
    segment = f" (segment {status.segment})" if status.segment else ""
    kind = " (a welcome mail: members are added as they join)" if status.welcome else ""
    later = f" ({status.later:,} of them waiting for their time)" if status.later else ""
    out.print(f"{status.issue} to {status.list_name}{segment}{kind}: "
              + ", ".join(f"{s} {n:,}" + (later if s == Delivery.PENDING else "") for s, n in counts.items()),
              markup=False)
    out.print("provider events: " + ", ".join(f"{kind} {n:,}" for kind, n in status.events.items()))
    _sender_side(status)
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


