"""The front door: `Newsletter(config)` is what the CLI, the scheduler and the web app call.

It owns the store (opened on first use), renders issues, builds providers through one factory,
and offers every operation the faces need, so the path issue → render → mailing → send is
written once. It keeps no process-wide state: stopping a send is a token passed in, and
several `Newsletter` objects can live side by side in one process.

    from newsletter import Newsletter

    with Newsletter.from_config("config.toml") as nl:
        report = nl.send("issues/2026-12-01.md", "weekly")
        print(report.summary())
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeAlias

from . import consent, placeholders, tokens
from .config import CONFIG_ENV, Config, ListSettings, load
from .consent import STATUSES
from .errors import ContentError, InputError, NewsletterError, TokenError, UnknownProviderError
from .statuses import Delivery, EventKind, Membership

# Each operation imports the modules it needs when it runs, so that a command starts quickly
# and `send` never loads the web app or the scheduler (or `serve` the CSV code).
if TYPE_CHECKING:
    import jinja2

    from .compat import Report
    from .content import Issue
    from .csvio import ImportReport
    from .ledger import Holder
    from .pacing import StopToken
    from .preview import PreviewServer
    from .providers import Provider, Result
    from .render import Rendered
    from .report import IssueReport
    from .schedule import DuePlan
    from .send import DryRunReport, Mailing, SendReport
    from .store import Store, Subscriber

__all__ = [
    "CONFIG_ENV",
    "STATUSES",
    "ArchivedIssue",
    "Delivery",
    "DryRunReport",
    "DuePlan",
    "DueRun",
    "EventKind",
    "IssueReport",
    "LinkedMembership",
    "Membership",
    "Newsletter",
    "Report",
    "Schedule",
    "ScheduledRun",
    "SendReport",
    "SendStatus",
    "SubscribeRequest",
    "init_project",
]

# Result types that live with their module, loaded when first asked for: `send` must not import
# the scheduler, nor `serve` the send path.
_LAZY = {"DryRunReport": "send", "SendReport": "send", "DuePlan": "schedule", "IssueReport": "report",
         "Report": "compat"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


IssueRef: TypeAlias = "str | os.PathLike[str] | Issue | Mailing"


class ProviderFactory(Protocol):
    """Makes the provider for a send; `providers.create` is the default, tests pass their own."""

    def __call__(self, config: Config, *, dry_run: bool = False) -> Provider: ...


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


@dataclass(frozen=True)
class DueRun:
    """What `send_due` did: the report of the send it ran, if any, and a line for the log."""

    report: SendReport | None
    line: str
    exit_code: int


@dataclass(frozen=True)
class SubscribeRequest:
    """A subscribe form submission, accepted: whether a confirmation mail should go out."""

    subscriber_id: int | None
    email: str
    address_key: str
    list_name: str
    name: str
    should_mail: bool


@dataclass(frozen=True)
class LinkedMembership:
    """The membership a signed unsubscribe link points at."""

    list: ListSettings
    email: str
    status: str


@dataclass(frozen=True)
class ArchivedIssue:
    slug: str
    subject: str
    date: dt.date
    preheader: str
    path: Path
    lists: tuple[str, ...]  # the lists it was sent to


@dataclass(frozen=True)
class ScheduledRun:
    id: str
    description: str
    next_run: dt.datetime | None  # in the schedule's zone; None when paused


@dataclass(frozen=True)
class Schedule:
    """What `schedule list` shows: the runs to come, and the due plan of `[schedule] list` (if set)."""

    runs: list[ScheduledRun]
    plan: DuePlan | None


def init_project(folder: str | os.PathLike[str]) -> list[Path]:
    """Write a working project into `folder`: config.toml (every key commented), the templates to
    customise, a sample issue and list. Refuses, writing nothing, if any of those files exists."""
    from .templates import SKELETON

    target = Path(folder)
    sources = sorted(p for p in SKELETON.rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts and ".db" not in p.name)
    for source in sources:
        relative = source.relative_to(SKELETON)
        for depth in range(1, len(relative.parts) + 1):  # the file and each folder on its way, inside target
            existing = target.joinpath(*relative.parts[:depth])
            if existing.is_symlink():
                raise InputError(f"{existing}: is a symlink; `newsletter init` never writes through one (it would "
                                 f"write outside {target}): remove it, or choose another folder")
        if existing.exists():
            raise InputError(f"{existing}: already exists; `newsletter init` writes only files that are not there yet "
                             f"(choose an empty folder)")
    written = []
    for source in sources:
        path = target / source.relative_to(SKELETON)
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL | O_NOFOLLOW: a file or link that appeared since the check is refused, not followed.
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(handle, "wb") as out:
            out.write(source.read_bytes())
        written.append(path)
    return written


class Newsletter:
    """One newsletter, as `config.toml` describes it: issues, subscribers, sends and schedule."""

    def __init__(self, config: Config, *, provider_factory: ProviderFactory | None = None) -> None:
        self.config = config
        if provider_factory is None:
            from .providers import create

            provider_factory = create
        self._provider_factory: ProviderFactory = provider_factory
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._unsubscribe_signer: tokens.Signer | None = None
        # Sent issues parsed, and their web pages per list, each kept until the file changes.
        self._archived: dict[tuple[Path, float], Issue] = {}
        self._web_pages: dict[tuple[Path, float, str], str] = {}

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, *,
                    provider_factory: ProviderFactory | None = None) -> Newsletter:
        """Load `path` (else $NEWSLETTER_CONFIG, else ./config.toml) and open the newsletter it describes."""
        return cls(load(path), provider_factory=provider_factory)

    @property
    def store(self) -> Store:
        """The subscriber store, opened (and its schema upgraded) on first use."""
        from .store import Store

        with self._store_lock:
            if self._store is None:
                self._store = Store(self.config)
            return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def explain(self, exc: BaseException) -> NewsletterError | None:
        """An exception from below that is the infrastructure's doing (a database away, a full disk), as
        the one-line error a face shows; None for anything else, which is a bug."""
        from .sql import transient

        if self._store is not None and transient(exc):
            return self._store.unavailable(exc)
        return None

    def __enter__(self) -> Newsletter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def provider(self, *, dry_run: bool = False) -> Provider:
        """The configured provider (with its secret from the environment, unless a dry run)."""
        return self._provider_factory(self.config, dry_run=dry_run)

    # -- issues -------------------------------------------------------------------------------

    def issue(self, path: str | os.PathLike[str]) -> Issue:
        from .content import parse

        settings = self.config.newsletter
        return parse(Path(path), base_url=settings.base_url, max_bytes=settings.max_issue_bytes)

    def signup_form(self, list_name: str) -> tuple[str, list[str]]:
        """The HTML form to paste on another site (`web/embed.html`), and what keeps it from working yet."""
        from . import templates

        declared = self.config.list(list_name)
        action = f"{self.config.require_base_url().rstrip('/')}/subscribe/{list_name}"
        html = templates.web_environment(self.config.templates_dir).get_template("embed.html").render(
            action=action, list=declared)
        notes = [] if self.config.web.allowed_origins else [
            f"{self.config.path}: [web] allowed_origins is empty: add the origin of the site that shows this form "
            f"(such as https://www.example.org), or the form's posts are refused"]
        return html, notes

    def healthy(self) -> bool:
        """The store answers: what a load balancer's or orchestrator's health check asks."""
        return self.store.reachable()

    def check_templates(self) -> None:
        """Compile every mail and web template, the project's or the package's: a RenderError if one is broken."""
        from . import templates

        templates.check(self.config.templates_dir)

    def web_templates(self) -> jinja2.Environment:
        """The Jinja2 environment the web pages render with (`web/…` of the project's, else the package's)."""
        from . import templates

        return templates.web_environment(self.config.templates_dir)

    def render(self, path: str | os.PathLike[str]) -> Rendered:
        """The issue rendered once, placeholders still in."""
        from .render import render

        return render(self.issue(path), self.config.newsletter, self.config.templates_dir)

    def write_rendered(self, path: str | os.PathLike[str],
                       out_dir: str | os.PathLike[str]) -> tuple[Rendered, Path, Path]:
        """Render and write `<slug>.html` and `<slug>.txt` to `out_dir`, each whole or not at all."""
        from .files import atomic_write

        rendered = self.render(path)
        target = Path(out_dir)
        html_path, text_path = target / f"{rendered.slug}.html", target / f"{rendered.slug}.txt"
        atomic_write(html_path, rendered.html)
        atomic_write(text_path, rendered.text)
        return rendered, html_path, text_path

    def preview_server(self, path: str | os.PathLike[str], host: str, port: int) -> tuple[Rendered, PreviewServer]:
        """The rendered issue and a server showing it with sample values, rendering again whenever the
        issue or a template changes; the caller runs and closes it. Port 0 takes a free one."""
        import errno

        from .preview import make_server, sample_values

        watched = [Path(path), *sorted(p for p in self.config.templates_dir.rglob("*") if p.is_file())]

        def stamp() -> str:
            return ",".join(str(p.stat().st_mtime_ns) if p.exists() else "-" for p in watched)

        def values(made: Rendered) -> dict[str, str]:
            return sample_values(self.config.newsletter.base_url, made.slug)

        try:
            return make_server(lambda: self.render(path), values, stamp, host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"{host}:{port} is in use: pick another with --port, or --port 0 for a free one") \
                    from None
            raise InputError(f"cannot serve on {host}:{port}: {exc.strerror}") from None

    # -- sending ------------------------------------------------------------------------------

    def list_name(self, name: str | None = None) -> str:
        """`name`, else `[schedule] list`; an error unless the list is declared."""
        return self.config.list_or_default(name)

    def mailing(self, issue: IssueRef, list_name: str | None = None, *, dry_run: bool = False) -> Mailing:
        """The issue rendered and addressed to a list: what `send`, `dry_run` and test copies take."""
        from .content import Issue
        from .render import render
        from .send import Mailing

        if isinstance(issue, Mailing):
            return issue
        name = self.list_name(list_name)
        parsed = issue if isinstance(issue, Issue) else self.issue(issue)
        rendered = render(parsed, self.config.newsletter, self.config.templates_dir)
        return Mailing(self.config, rendered, name, dry_run=dry_run, from_header=parsed.from_header,
                       reply_to=parsed.reply_to)

    def dry_run(self, issue: IssueRef, list_name: str | None = None, *, out_dir: str | os.PathLike[str] | None = None,
                limit: int = 3) -> DryRunReport:
        """Everything a send would do short of the provider call; changes nothing, needs no API key."""
        from .send import dry_run

        mailing = self.mailing(issue, list_name, dry_run=True)
        provider = self.provider(dry_run=True)
        try:
            return dry_run(self.store, mailing, provider, out_dir=Path(out_dir) if out_dir else None, limit=limit)
        finally:
            provider.close()

    def recipients(self, issue: IssueRef, list_name: str | None = None) -> int:
        """How many people a send run now would mail (reads only)."""
        from .ledger import Ledger

        mailing = self.mailing(issue, list_name, dry_run=True)
        return Ledger(self.store, mailing.rendered.slug, mailing.list_name, create=False).forecast()[0]

    def send(self, issue: IssueRef, list_name: str | None = None, *, limit: int | None = None,
             max_rate: float | None = None, resend_unknown: bool = False,
             progress: Callable[[int, int], None] | None = None, stop: StopToken = None) -> SendReport:
        """Send the issue to the list, or continue an interrupted send; nobody gets it twice.

        `stop` (a callable or an Event) ends the send after the batch with the provider; the
        rest stays pending for the next call.
        """
        from .send import send

        mailing = self.mailing(issue, list_name)
        provider = self.provider()
        try:
            return send(self.store, mailing, provider, limit=limit, max_rate=max_rate, resend_unknown=resend_unknown,
                        progress=progress, stop=stop, lease=self.config.send.lease)
        finally:
            provider.close()

    def send_test_copy(self, issue: IssueRef, address: str, list_name: str | None = None) -> Result:
        """One copy marked [TEST] to `address`, with that subscriber's values; not recorded."""
        from .send import send_test_copy

        mailing = self.mailing(issue, list_name)
        provider = self.provider()
        try:
            return send_test_copy(self.store, mailing, provider, address)
        finally:
            provider.close()

    def slug(self, issue: str | os.PathLike[str]) -> str:
        """The slug of an issue given as its file or as the slug itself (for issues whose file is gone)."""
        if Path(issue).is_file():
            return self.issue(issue).slug
        text = str(issue)
        if text.endswith(".md") or "/" in text:
            return self.issue(issue).slug  # a missing file: its one-line error
        return text

    def report(self, issue: str | os.PathLike[str] | None = None, list_name: str | None = None, *,
               every: bool = False) -> list[IssueReport]:
        """Reports of sends: of one issue (file or slug; each list it went to, or `list_name`), of the
        newest send when no issue is given, or of every send with `every`."""
        from .report import build, sends_of

        slug = self.slug(issue) if issue is not None else None
        if list_name is not None:
            self.config.list(list_name)  # an unknown list: its one-line error
        found = sends_of(self.store, slug, list_name)
        if not found:
            raise self._no_send(slug, list_name)
        if issue is None and not every:
            found = found[:1]
        return [build(self.store, s, name) for s, name in found]

    def _no_send(self, slug: str | None, list_name: str | None) -> InputError:
        """The one-line error for a slug (or list) with no send, naming the sends there are."""
        from .report import sends_of

        what = f"of {slug}" if slug else "yet"
        sent = ", ".join(sorted({s for s, _ in sends_of(self.store)})) or "none"
        return InputError(f"no send {what}" + (f" to {list_name}" if list_name else "") + f" (sent: {sent})")

    def problems_csv(self, status: SendStatus, out: TextIO) -> int:
        """A send's failed and unknown rows as CSV, formulas neutralised; returns the rows written."""
        from .csvio import export_problems

        return export_problems(status.problems, out)

    def report_csv(self, reports: list[IssueReport]) -> str:
        """The reports as CSV: one row per send, counts then rates."""
        from .report import to_csv

        return to_csv(reports)

    def write_report_html(self, reports: list[IssueReport], path: str | os.PathLike[str]) -> Path:
        """One self-contained HTML page with tables and plots, written whole or not at all."""
        from .files import atomic_write
        from .report import to_html

        target = Path(path)
        atomic_write(target, to_html(reports, f"{self.config.newsletter.name}: sends").encode("utf-8"))
        return target

    def status(self, issue: str | os.PathLike[str], list_name: str | None = None, *,
               every_problem: bool = False) -> SendStatus:
        """Counts by state, the failed and unknown rows (the first 200, or all with `every_problem`),
        and provider events of one send. InputError for a slug that names no send."""
        from . import events
        from .ledger import Ledger

        name = self.list_name(list_name)
        slug = self.slug(issue)
        ledger = Ledger(self.store, slug, name, create=False)
        if not ledger.started():
            if not Path(issue).is_file():  # a slug that names no send: most likely a typo
                raise self._no_send(slug, name)
            return SendStatus(slug, name, False, {}, [], {}, [])
        lease = self.config.send.lease
        return SendStatus(slug, name, True, ledger.counts(), ledger.problems(limit=None if every_problem else 200),
                          events.issue_counts(self.store, slug), ledger.live_workers(lease), ledger.holders(lease))

    def plan_due(self, list_name: str | None = None, *, now: dt.datetime | None = None) -> DuePlan:
        """What `send --due` and the scheduler send now, what is missed or left alone and why, and what
        the next slot sends: the one due rule (see `schedule`)."""
        from . import schedule

        return schedule.plan_due(self.config, self.store, self.list_name(list_name), now)

    def send_due(self, list_name: str | None = None, *, issue_path: str | os.PathLike[str] | None = None,
                 now: dt.datetime | None = None, stop: StopToken = None) -> DueRun:
        """Send what the plan says is due to the list (or `issue_path`, a pinned job's issue): what cron
        and the scheduler run. Missed sends are reported (exit code 1), never sent late.

        Pins come first and leave the job store once their send has no pending rows (or was
        missed), so cron and a running scheduler agree; the ledger makes a send that both start
        happen once. Drafts are never sent from here. Quiet when nothing is due or missed.
        """
        from . import schedule

        name = self.list_name(list_name)
        schedule.trigger(self.config)  # a bad schedule is an error before anything is sent
        if issue_path is not None:
            return self._send_if_not_draft(Path(issue_path), name, stop)
        plan = schedule.plan_due(self.config, self.store, name, now)
        lines: list[str] = []
        exit_code, last = 0, None
        for passed in plan.missed:
            if passed.pin is not None:
                schedule.pin_done(self.config, self.store, passed.pin.job_id)
            lines.append(f"MISSED: {passed.pin.job_id if passed.pin else passed.path} ({passed.why}): not sent")
            exit_code = 1
        for item in plan.due:
            run = self._send_if_not_draft(item.path, name, stop)
            last = run.report or last
            lines.append(run.line)
            exit_code = max(exit_code, run.exit_code)
            if item.pin is not None and run.report is not None and not run.report.counts.get("pending"):
                schedule.pin_done(self.config, self.store, item.pin.job_id)
            if run.exit_code:
                break  # the provider or a stop token said no: the rest waits for the next run
        return DueRun(last, "\n".join(line for line in lines if line), exit_code)

    def _send_if_not_draft(self, path: Path, list_name: str, stop: StopToken) -> DueRun:
        parsed = self.issue(path)
        if parsed.draft:
            return DueRun(None, f"{path}: not sent: the issue is a draft (draft: true)", 0)
        report = self.send(self.mailing(parsed, list_name), stop=stop)  # joins a send already running
        return DueRun(report, report.summary(), report.exit_code)

    # -- the schedule -------------------------------------------------------------------------

    def pin(self, issue_path: str | os.PathLike[str], at: str, list_name: str | None = None) -> tuple[str, dt.datetime]:
        """Pin a send of the issue to 'YYYY-MM-DD HH:MM' in the schedule's zone; returns the job id and time."""
        from . import schedule

        name = self.list_name(list_name)
        return schedule.pin(self.config, self.store, Path(issue_path), schedule.parse_at(at), name)

    def scheduled(self) -> Schedule:
        """The weekly slot (and what it sends), the pinned sends, and the plan of `[schedule] list`."""
        from . import schedule

        tz = schedule.timezone(self.config)
        runs, plan = [], None
        if self.config.schedule.list:
            name = self.list_name(self.config.schedule.list)
            plan = schedule.plan_due(self.config, self.store, name)
            what = f"sends {plan.next_issue}" if plan.next_issue else "nothing due for it yet"
            runs.append(ScheduledRun(f"{schedule.WEEKLY_PREFIX}{name}",
                                     f"weekly send ({self.config.schedule.cron}), {what}", plan.next_slot))
        for job in schedule.jobs(self.config, self.store):
            if not job.id.startswith(schedule.WEEKLY_PREFIX):
                runs.append(ScheduledRun(job.id, job.name, job.next_run.astimezone(tz) if job.next_run else None))
        return Schedule(runs, plan)

    def cancel(self, job_id: str) -> None:
        """Remove a pinned send."""
        from . import schedule

        schedule.cancel(self.config, self.store, job_id)

    def run_scheduler(self, list_name: str | None = None, *, stop: StopToken) -> None:
        """Run the weekly schedule and pinned sends until `stop` says so (blocks)."""
        from . import schedule

        name = self.list_name(list_name)

        def runner(list_: str, issue_path: Path | None) -> str:
            return self.send_due(list_, issue_path=issue_path, stop=stop).line

        schedule.run_scheduler(self.config, self.store, name, runner, stop)

    # -- subscribers --------------------------------------------------------------------------

    def import_csv(self, path: str | os.PathLike[str], list_name: str, *, status: str = consent.ACTIVE,
                   strict: bool = False, rejects_path: str | os.PathLike[str] | None = None,
                   progress: Callable[[int], None] | None = None, delimiter: str | None = None,
                   email_column: str | None = None) -> ImportReport:
        """Import subscribers from a CSV file with an 'email' column."""
        from .csvio import import_csv

        return import_csv(self.store, Path(path), list_name, status=status, strict=strict,
                          rejects_path=Path(rejects_path) if rejects_path else None, progress=progress,
                          delimiter=delimiter, email_column=email_column)

    def export_csv(self, list_name: str, out: TextIO | str | os.PathLike[str],
                   status: str | None = consent.ACTIVE) -> int:
        """Write a list as CSV to a stream, or whole-or-nothing to a file path; returns the rows written.

        `status`: "active" (who would be mailed), another status, "suppressed", or None for everyone.
        """
        from .csvio import export_csv

        return self._write_csv(out, lambda stream: export_csv(self.store, list_name, stream, status))

    def export_suppressions(self, out: TextIO | str | os.PathLike[str]) -> int:
        """Write the suppression list as CSV; returns the rows written."""
        from .csvio import export_suppressions

        return self._write_csv(out, lambda stream: export_suppressions(self.store, stream))

    @staticmethod
    def _write_csv(out: TextIO | str | os.PathLike[str], write: Callable[[TextIO], int]) -> int:
        if not isinstance(out, (str, os.PathLike)):
            return write(out)
        import io

        from .files import atomic_write

        buffer = io.StringIO()
        count = write(buffer)
        atomic_write(Path(out), buffer.getvalue())
        return count

    def add_subscriber(self, email: str, list_name: str, *, name: str = "", attributes: dict[str, str] | None = None,
                       status: str = consent.ACTIVE) -> tuple[Subscriber | None, str]:
        """Add one subscriber (or update their name and attributes); returns them and what happened."""
        return self.store.add(email, list_name, name=name, attributes=attributes, status=status)

    def subscriber(self, email: str) -> Subscriber:
        return self.store.get(email)

    def unsubscribe_address(self, email: str, list_name: str | None) -> list[str]:
        """Unsubscribe from one list, or every list when `list_name` is None; returns the lists changed."""
        return self.store.unsubscribe(email, list_name)

    def subscriber_history(self, email: str) -> list[dict[str, Any]]:
        """Every change of this person's memberships and suppression: when, from, to, source, why."""
        return self.store.history(self.store.get(email).id)

    def subscriber_record(self, email: str) -> dict[str, Any]:
        """Everything held on one person, for a data-access request."""
        return self.store.record(email)

    def unsuppress(self, email: str, reason: str) -> None:
        """Undo a mistaken suppression; the reason goes into the person's history."""
        self.store.unsuppress(email, reason)

    def suppress(self, email: str, reason: str) -> bool:
        """Never mail this address again, on any list; False when it already was."""
        return self.store.suppress(email, reason)

    def erase(self, email: str) -> None:
        """Erase a person; a hash keeps the address from being stored again."""
        self.store.remove(email)

    def list_counts(self) -> dict[str, dict[str, int]]:
        """Per declared list: members by status, and how many active members are suppressed."""
        return self.store.list_counts()

    # -- the subscriber-facing side (web) -----------------------------------------------------

    def subscribe(self, email: str, list_name: str, name: str = "") -> SubscribeRequest:
        """A subscribe request from the public form (double opt-in). InputError for a bad address."""
        from . import addresses, fields

        address = addresses.normalize(email)
        person = fields.name(name)
        subscriber_id, should_mail = self.store.request_subscription(address.email, list_name, person)
        return SubscribeRequest(subscriber_id, address.email, address.key, list_name, person,
                                should_mail and subscriber_id is not None)

    def send_confirmation(self, request: SubscribeRequest) -> Result:
        """Mail the confirmation link of a subscribe request."""
        from .send import send_confirmation

        if request.subscriber_id is None:
            raise InputError("this subscribe request has nobody to confirm")
        provider = self.provider()
        try:
            return send_confirmation(self.config, provider, subscriber_id=request.subscriber_id, email=request.email,
                                     name=request.name, list_name=request.list_name)
        finally:
            provider.close()

    def confirm(self, token: str, *, now: float | None = None) -> tuple[ListSettings, str | None]:
        """Act on a confirmation link: the list and the membership's status after (None: no membership).

        TokenError for a forged, altered or expired link; UnknownListError for a list no longer declared.
        """
        claims = self._confirm_claims(token, now)
        declared = self.config.list(claims.list_name)
        return declared, self.store.confirm(claims.subscriber_id, claims.list_name)

    def confirmation_list(self, token: str, *, now: float | None = None) -> ListSettings:
        """The list a confirmation link is for, checking the link without acting on it."""
        return self.config.list(self._confirm_claims(token, now).list_name)

    def _confirm_claims(self, token: str, now: float | None) -> tokens.Claims:
        claims = tokens.check_confirm(self.config.secret(), token, now=now, previous=self.config.previous_secrets())
        self._for_its_person(claims)
        return claims

    def _for_its_person(self, claims: tokens.Claims) -> None:
        """TokenError unless the subscriber the link names still has the address it was made for."""
        found = self.store.membership(claims.subscriber_id, claims.list_name)
        if found is not None and not claims.for_address(found[0]):
            raise TokenError("this link was made for someone else")

    def _unsubscribe_claims(self, token: str) -> tokens.Claims:
        if self._unsubscribe_signer is None:
            self._unsubscribe_signer = tokens.unsubscribe_signer(self.config.secret(), self.config.previous_secrets())
        claims = self._unsubscribe_signer.check(token)
        self._for_its_person(claims)
        return claims

    def unsubscribe_link(self, token: str) -> LinkedMembership | None:
        """What an unsubscribe link points at, without acting (mail scanners fetch links); None when gone."""
        claims = self._unsubscribe_claims(token)
        declared = self.config.list(claims.list_name)
        found = self.store.membership(claims.subscriber_id, claims.list_name)
        return LinkedMembership(declared, found[0], found[1]) if found else None

    def unsubscribe(self, token: str, *, source: str = "web") -> LinkedMembership | None:
        """Act on an unsubscribe link; repeating it is harmless. None when the membership is gone."""
        claims = self._unsubscribe_claims(token)
        declared = self.config.list(claims.list_name)
        self.store.change(claims.subscriber_id, claims.list_name, consent.UNSUBSCRIBE, source,
                          issue=claims.extra or None)
        found = self.store.membership(claims.subscriber_id, claims.list_name)
        return LinkedMembership(declared, found[0], found[1]) if found else None

    def receive_events(self, provider: str, body: bytes, headers: Mapping[str, str], *,
                       now: float | None = None) -> tuple[int, Counter[str]]:
        """Verify and record one webhook call of `provider`: (events received, counts by kind).

        UnknownProviderError for a provider with no webhook; WebhookError (before anything is read as events)
        when the signature or its time is wrong; InputError for a body that is not events.
        """
        import time

        from . import events
        from .webhooks import receivers

        found = receivers(self.config)
        receiver = found.get(provider)
        if receiver is None:
            raise UnknownProviderError(f"no webhook for {provider!r}; there are: {', '.join(sorted(found))}")
        receiver.verify(body, headers, time.time() if now is None else now)
        try:
            parsed = receiver.parse(body)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return len(parsed), events.apply(self.store, parsed, f"{provider} webhook")

    def archive(self, list_name: str | None = None) -> list[ArchivedIssue]:
        """Issues that have been sent (to `list_name`, or to any list), newest first."""
        from .ledger import sent_issues

        lists: dict[str, list[str]] = {}
        for row in sent_issues(self.store, list_name):
            lists.setdefault(row["issue"], []).append(row["name"])
        found: dict[str, ArchivedIssue] = {}
        for path in sorted(self.config.issues_dir.glob("*.md")):
            parsed = self._archived_issue(path)
            if parsed is not None and parsed.slug in lists:
                subject = placeholders.fill(parsed.subject, {}, html_escape=False)
                found[parsed.slug] = ArchivedIssue(parsed.slug, subject, parsed.date, parsed.preheader, path,
                                                   tuple(sorted(lists[parsed.slug])))
        return sorted(found.values(), key=lambda a: (a.date, a.slug), reverse=True)

    def _archived_issue(self, path: Path) -> Issue | None:
        key = (path, path.stat().st_mtime)
        if key not in self._archived:
            try:
                self._archived[key] = self.issue(path)
            except ContentError:
                return None
        return self._archived[key]

    def web_version(self, slug: str, list_name: str | None = None) -> str | None:
        """The web page of an issue sent to `list_name` (or to any list); None when it was not sent there.

        Personal placeholders give way to their defaults or nothing, never anyone's data, and the
        footer invites to subscribe to the list instead of offering to unsubscribe.
        """
        from .render import render

        archived = next((a for a in self.archive(list_name) if a.slug == slug), None)
        if archived is None:
            return None
        target = list_name or archived.lists[0]
        base = self.config.require_base_url()
        key = (archived.path, archived.path.stat().st_mtime, target)
        if key not in self._web_pages:
            parsed = self._archived_issue(archived.path)
            if parsed is None:  # broken since it was listed
                return None
            self._web_pages[key] = render(parsed, self.config.newsletter, self.config.templates_dir,
                                          subscribe_url=f"{base}/subscribe/{target}").html
        values = {"name": "", "email": "", "unsubscribe_url": "", "view_url": f"{base}/archive/{target}/{slug}"}
        return placeholders.fill(self._web_pages[key], values, html_escape=True)

