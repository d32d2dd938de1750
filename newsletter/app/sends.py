"""`nl.sends`: an issue addressed to a list, its dry run, the send, test copies, its status and reports."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeAlias

from ..errors import ConfigError, InputError
from .part import Part

if TYPE_CHECKING:
    from ..content import Issue
    from ..ledger import Holder
    from ..pacing import StopToken
    from ..providers import Result
    from ..report import IssueReport
    from ..send import DryRunReport, Mailing, SendReport

IssueRef: TypeAlias = "str | os.PathLike[str] | Issue | Mailing"
PROBLEMS_KEPT = 200  # failed and unknown rows `status` reads unless asked for all


@dataclass(frozen=True)
class SendStatus:
    """Where the send of one issue to one list stands."""

    issue: str
    list_name: str
    started: bool
    counts: dict[str, int]
    problems: list[tuple[str, str, str, int]]  # (email, state, error, attempts) of failed and unknown rows
    events: dict[str, int]
    workers: list[dict[str, Any]]  # processes sending it now: id, host, pid, sent, started_at, heartbeat_at
    holders: list[Holder] = field(default_factory=list)  # who holds the rows in flight, and whether it is gone
    segment: str = ""  # the segments the send was fixed to; "" for the whole list
    welcome: bool = False  # a welcome mail: its rows are added as members join
    later: int = 0  # pending rows whose time has not come (deferred, or a welcome mail's day)


class Sends(Part):
    def mailing(self, issue: IssueRef, list_name: str | None = None, *, dry_run: bool = False) -> Mailing:
        """The issue rendered and addressed to a list (default: `[schedule] list`): what a send, a dry run
        and test copies take."""
        from ..content import Issue
        from ..send import Mailing

        if isinstance(issue, Mailing):
            return issue
        name = self.config.list_or_default(list_name)
        parsed = issue if isinstance(issue, Issue) else self._nl.issues.load(issue)
        return Mailing(self.config, self._nl.issues.render(parsed), name, dry_run=dry_run,
                       from_header=parsed.from_header, reply_to=parsed.reply_to)

    def segment(self, list_name: str | None, segment: str) -> tuple[str | None, str]:
        """(the list, the expression) of `segment`: a name from `[segments.NAME]` (its own list), or an
        expression for `list_name`; no segment is the whole list. ConfigError when a named segment is of
        another list."""
        named = self.config.segments.get(segment)
        if named is None:
            return list_name, segment
        if list_name and list_name != named.list:
            raise ConfigError(f"{self.config.path}: segment {segment!r} is of list {named.list!r}, not {list_name!r}")
        return named.list, named.where

    def dry_run(self, issue: IssueRef, list_name: str | None = None, *, out_dir: str | os.PathLike[str] | None = None,
                limit: int = 3, segment: str = "") -> DryRunReport:
        """Everything a send would do short of the provider call; changes nothing, needs no API key."""
        from ..send import dry_run

        list_name, where = self.segment(list_name, segment)
        mailing = self.mailing(issue, list_name, dry_run=True)
        with closing(self._nl.provider(dry_run=True)) as provider:
            return dry_run(self.store, mailing, provider, out_dir=Path(out_dir) if out_dir else None, limit=limit,
                           segment=where)

    def recipients(self, issue: IssueRef, list_name: str | None = None, *, segment: str = "") -> int:
        """How many people a send run now would mail (reads only)."""
        from ..ledger import Ledger
        from ..send import audience

        list_name, where = self.segment(list_name, segment)
        mailing = self.mailing(issue, list_name, dry_run=True)
        return Ledger(self.store, mailing.rendered.slug, mailing.list_name, create=False,
                      segment=audience(where)).forecast()[0]

    def send(self, issue: IssueRef, list_name: str | None = None, *, limit: int | None = None,
             max_rate: float | None = None, resend_unknown: bool = False,
             progress: Callable[[int, int], None] | None = None, stop: StopToken = None,
             segment: str = "") -> SendReport:
        """Send the issue to the list (or a segment of it), or continue an interrupted send; nobody gets
        it twice. A segment fixes who the send is for when it starts: a resume, another worker or a
        change of tags later never widens or narrows it.

        `stop` (a callable or an Event) ends the send after the batch with the provider; the
        rest stays pending for the next call.
        """
        list_name, where = self.segment(list_name, segment)
        return self.deliver(self.mailing(issue, list_name), limit=limit, max_rate=max_rate,
                            resend_unknown=resend_unknown, progress=progress, stop=stop, segment=where)

    def deliver(self, mailing: Mailing, **options: Any) -> SendReport:
        """`send.send` of the mailing through the configured provider, counted in `nl.monitoring` and
        watched by `nl.alerts`: the one place an issue or a welcome mail is sent from."""
        from ..send import send

        metrics, backend = self._nl.monitoring.metrics, self.config.provider.backend
        issue, list_name = mailing.rendered.slug, mailing.list_name
        try:
            with closing(self._nl.provider()) as provider:
                report = send(self.store, mailing, provider, lease=self.config.send.lease,
                              meter=metrics.meter(backend), **options)
        except BaseException as exc:
            metrics.send_ended(list_name, "error")
            self._nl.alerts.after_send(issue, list_name, None, exc)
            raise
        metrics.delivered(list_name, backend, report.this_run)
        metrics.send_ended(list_name, {0: "complete", 1: "problems"}.get(report.exit_code, "pending"))
        self._nl.alerts.after_send(issue, list_name, report, None)
        return report

    def test_copy(self, issue: IssueRef, address: str, list_name: str | None = None) -> Result:
        """One copy marked [TEST] to `address`, with that subscriber's values; not recorded."""
        from ..send import send_test_copy

        mailing = self.mailing(issue, list_name)
        with closing(self._nl.provider()) as provider:
            return send_test_copy(self.store, mailing, provider, address)

    def status(self, issue: str | os.PathLike[str], list_name: str | None = None, *,
               every_problem: bool = False) -> SendStatus:
        """Counts by state, the failed and unknown rows (the first 200, or all with `every_problem`),
        and provider events of one send. InputError for a slug that names no send."""
        from .. import events
        from ..ledger import Ledger

        name = self.config.list_or_default(list_name)
        slug = self._nl.issues.slug(issue)
        ledger = Ledger(self.store, slug, name, create=False)
        if not ledger.started():
            if not Path(issue).is_file():  # a slug that names no send: most likely a typo
                raise self._no_send(slug, name)
            return SendStatus(slug, name, False, {}, [], {}, [])
        lease = self.config.send.lease
        return SendStatus(slug, name, True, ledger.counts(),
                          ledger.problems(limit=None if every_problem else PROBLEMS_KEPT),
                          events.issue_counts(self.store, slug), ledger.live_workers(lease), ledger.holders(lease),
                          ledger.segments(), ledger.welcome(), ledger.later())

    def problems_csv(self, status: SendStatus, out: TextIO) -> int:
        """A send's failed and unknown rows as CSV, formulas neutralised; returns the rows written."""
        from ..csvio import export_problems

        return export_problems(status.problems, out)

    def report(self, issue: str | os.PathLike[str] | None = None, list_name: str | None = None, *,
               every: bool = False) -> list[IssueReport]:
        """Reports of sends: of one issue or welcome mail (file or slug; each list it went to, or
        `list_name`), of the newest issue's send when none is given, or of every send with `every`."""
        from ..report import build, sends_of

        slug = self._nl.issues.slug(issue) if issue is not None else None
        if list_name is not None:
            self.config.list(list_name)  # an unknown list: its one-line error
        found = sends_of(self.store, slug, list_name, welcome=issue is not None or every)
        if not found:
            raise self._no_send(slug, list_name)
        if issue is None and not every:
            found = found[:1]
        return [build(self.store, s, name) for s, name in found]

    def report_csv(self, reports: list[IssueReport]) -> str:
        """The reports as CSV: one row per send, counts then rates."""
        from ..report import to_csv

        return to_csv(reports)

    def write_report_html(self, reports: list[IssueReport], path: str | os.PathLike[str]) -> Path:
        """One self-contained HTML page with tables and plots, written whole or not at all."""
        from ..files import atomic_write
        from ..report import to_html

        target = Path(path)
        atomic_write(target, to_html(reports, f"{self.config.newsletter.name}: sends").encode("utf-8"))
        return target

    def _no_send(self, slug: str | None, list_name: str | None) -> InputError:
        """The one-line error for a slug (or list) with no send, naming the sends there are."""
        from ..report import sends_of

        what = f"of {slug}" if slug else "yet"
        sent = ", ".join(sorted({s for s, _ in sends_of(self.store)})) or "none"
        return InputError(f"no send {what}" + (f" to {list_name}" if list_name else "") + f" (sent: {sent})")
