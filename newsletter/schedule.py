"""Weekly sends on a schedule: the cron expression, what is due, pinned sends, the scheduler.

Two ways to run: `newsletter scheduler` (APScheduler 3 with its jobs in the store's database,
so they survive restarts) or the system's cron calling `newsletter send --due`. Both act on one
plan (`plan_due`): pins whose time has come, then the issue whose slot is open; the ledger makes
either safe to run again and again. This module decides what is due and keeps the jobs; the
sending itself is a `Runner` handed in by the front door, so nothing here reaches for
process-wide state.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import re
import threading
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger

from .config import Config
from .content import Issue, heading, load
from .errors import ConfigError, ContentError, LockedError, NewsletterError
from .ledger import Ledger
from .pacing import StopToken, stop_check
from .schema import PENDING
from .store import Store

if TYPE_CHECKING:  # the rest of APScheduler is imported where it is used: cron's `send --due` needs none of it
    from apscheduler.events import JobExecutionEvent
    from apscheduler.executors.base import BaseExecutor
    from apscheduler.job import Job
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.base import BaseScheduler
    from apscheduler.triggers.date import DateTrigger

log = logging.getLogger("newsletter.schedule")

JOB_TABLE = "apscheduler_jobs"
WEEKLY_PREFIX = "weekly:"
PIN_PREFIX = "pin:"
WAKE_ID = "wake"
WAKE_SECONDS = 30  # how soon a running scheduler sees a send pinned by another process
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAY_NUMBERS = MappingProxyType({name: number for number, name in enumerate(_DAY_NAMES)})

# What a job calls to send: (list, pinned issue file or None for what is due) -> a line for the log.
Runner = Callable[[str, Path | None], str]


class Chore(NamedTuple):
    """Work the scheduler repeats every `seconds` besides sending (reading the bounce mailbox): it
    returns a line to log, "" for nothing to say."""

    name: str
    seconds: int
    run: Callable[[], str]


def timezone(config: Config) -> zoneinfo.ZoneInfo:
    name = config.schedule.timezone
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{config.path}: [schedule] timezone: unknown time zone {name!r} "
                          f"(use an IANA name such as Europe/Berlin)") from None


def _weekday(token: str) -> int:
    token = token.strip().lower()
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    if token[:3] in _DAY_NUMBERS:
        return _DAY_NUMBERS[token[:3]]
    raise ValueError(f"bad weekday {token!r}")


def cron_weekdays(field: str) -> str:
    """Cron's day-of-week field (0 or 7 = Sunday) as APScheduler day names.

    APScheduler 3 numbers weekdays from Monday = 0, so "1" would silently mean Tuesday there;
    names mean the same in both, so every number is turned into a name.
    """
    if field.strip() in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in {part!r}")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            a, b = span.split("-", 1)
            first, last = _weekday(a), _weekday(b)
            if b.strip() == "7":
                last = 7
        else:
            first = last = _weekday(span)
        if last < first:
            raise ValueError(f"bad range {part!r}")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_DAY_NAMES[d] for d in sorted(days, key=lambda d: (d - 1) % 7))


def trigger(config: Config) -> CronTrigger:
    """The weekly trigger from `[schedule] cron`, checked now rather than at the first run."""
    expression = config.schedule.cron
    fields = expression.split()
    where = f"{config.path}: [schedule] cron: {expression!r}"
    if len(fields) != 5:
        raise ConfigError(f"{where} must have 5 fields: minute hour day-of-month month day-of-week")
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=cron_weekdays(weekday),
                           timezone=timezone(config))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# -- what is due ---------------------------------------------------------------------------------
# The one due rule; `send --due`, the scheduler, `send --due --dry-run` and `schedule list` all act
# on the plan below. An issue goes automatically only at the first slot on or after its date (any
# slot of that day, if the schedule has several), or later within the misfire grace; past that it
# is missed, and only a send by hand sends it. A pin is the operator's explicit choice: it goes at
# its time whatever the issue's date. At most one weekly issue goes to a list per slot.

MISSED_DAYS = 7  # how long after its slot a missed issue is still reported by every `send --due`


@dataclass(frozen=True)
class PlanItem:
    """An issue in the plan, and why it is there: due now, missed, or left alone (`pin` when pinned)."""

    path: Path
    slug: str
    why: str
    pin: Pin | None = None


@dataclass(frozen=True)
class DuePlan:
    now: dt.datetime
    due: list[PlanItem]  # in order: pins whose time has come, then at most one weekly issue
    missed: list[PlanItem]  # their time passed beyond the grace: reported by `send --due`, which exits 1
    skipped: list[PlanItem]  # never sent automatically (old, drafts, unreadable) or waiting for a later slot
    next_slot: dt.datetime | None
    next_issue: Path | None  # what the next slot would send, as things stand

    @property
    def next_sends(self) -> str:
        """What the next slot sends, in words."""
        return f"sends {self.next_issue}" if self.next_issue else "nothing due for it yet"


@dataclass(frozen=True)
class _Send:
    started_at: dt.datetime | None  # aware UTC; None when not started
    pending: int

    @property
    def complete(self) -> bool:
        return self.started_at is not None and not self.pending


def by_hand(path: Path, list_name: str) -> str:
    return f"`newsletter send {path} --list {list_name}`"


def latest_slot(weekly: CronTrigger, now: dt.datetime) -> dt.datetime | None:
    """The last slot at or before `now` (APScheduler only looks forward: step back until one is found)."""
    for span in (60, 3600, 86400, 8 * 86400, 32 * 86400, 367 * 86400):
        slot: dt.datetime | None = weekly.get_next_fire_time(None, now - dt.timedelta(seconds=span))
        if slot is not None and slot <= now:
            while (later := weekly.get_next_fire_time(None, slot + dt.timedelta(seconds=1))) and later <= now:
                slot = later
            return slot
    return None


def plan_due(config: Config, store: Store, list_name: str, now: dt.datetime | None = None, *,
             bodies: bool = True) -> DuePlan:
    """What is due now for the list, what is missed or left alone and why, and what the next slot sends.

    With `bodies`, every issue file is parsed whole, so that one whose body has an error is listed as
    unreadable (what `schedule list` and `send --due --dry-run` show); without, only front matter
    is read, which is all the rule needs: cron's every minute, where an issue with an error in its
    body that is due fails its send with that error rather than being left out in silence."""
    tz = timezone(config)
    now = (now or dt.datetime.now(dt.UTC)).astimezone(tz)
    grace = dt.timedelta(seconds=config.schedule.misfire_grace)
    due: list[PlanItem] = []
    missed: list[PlanItem] = []
    waiting = pins(config, store)
    for pin in (p for p in waiting if p.list_name == list_name and p.at <= now):
        why = f"pinned to {pin.at.astimezone(tz):%Y-%m-%d %H:%M %Z}"
        if now - pin.at > grace:
            missed.append(PlanItem(pin.issue_path, pin.slug, f"{why}, beyond [schedule] misfire_grace; send it by "
                                                           f"hand with {by_hand(pin.issue_path, list_name)}", pin))
        else:
            due.append(PlanItem(pin.issue_path, pin.slug, why, pin))
    pinned = {pin.slug for pin in waiting}
    rule = _WeeklyRule(config, store, list_name, pinned, bodies)
    weekly, late, skipped = rule.at(now)
    slot = rule.trigger.get_next_fire_time(None, now + dt.timedelta(seconds=1))
    then = rule.at(slot)[0] if slot is not None else []
    return DuePlan(now, due + weekly, missed + late, skipped, slot, then[0].path if then else None)


class _InWindow(NamedTuple):
    issue: Issue
    path: Path
    send: _Send


class _WeeklyRule:
    """The weekly rule for one list, over issue files parsed once and send states read once, so that a
    plan can ask it about now and about the next slot without doing the work twice."""

    def __init__(self, config: Config, store: Store, list_name: str, pinned: set[str], bodies: bool) -> None:
        self.config, self.store, self.list_name, self.pinned = config, store, list_name, pinned
        self.tz, self.trigger = timezone(config), trigger(config)
        self.grace = dt.timedelta(seconds=config.schedule.misfire_grace)
        self.issues: list[tuple[Path, Issue | ContentError]] = []
        read = load if bodies else heading
        welcome = config.welcome_files
        for path in sorted(config.issues_dir.glob("*.md")):
            if path.resolve() in welcome:
                continue
            try:
                self.issues.append((path, read(path, config.newsletter)))
            except ContentError as exc:
                self.issues.append((path, exc))
        self._states: dict[str, _Send] = {}

    def state(self, slug: str) -> _Send:
        if slug not in self._states:
            ledger = Ledger(self.store, slug, self.list_name, create=False)
            started = ledger.started_at()
            self._states[slug] = _Send(started, ledger.counts()[PENDING] if started else 0)
        return self._states[slug]

    def at(self, now: dt.datetime) -> tuple[list[PlanItem], list[PlanItem], list[PlanItem]]:
        """The rule at `now`: (the slot's issue, if any; missed; left alone)."""
        missed: list[PlanItem] = []
        skipped: list[PlanItem] = []
        window: list[_InWindow] = []  # issues whose slot is open now, finished sends included
        for path, issue in self.issues:
            self._place(path, issue, now, window, missed, skipped)
        return self._one_per_slot(window, now, skipped), missed, skipped

    def _place(self, path: Path, issue: Issue | ContentError, now: dt.datetime, window: list[_InWindow],
               missed: list[PlanItem], skipped: list[PlanItem]) -> None:
        """One issue file: in the window of the open slot, missed, left alone, or not yet anything."""
        if isinstance(issue, ContentError):
            skipped.append(PlanItem(path, path.stem, f"cannot be read: {issue}"))
            return
        if issue.slug in self.pinned:
            return
        if issue.draft:
            skipped.append(PlanItem(path, issue.slug, "a draft (draft: true): never sent automatically"))
            return
        first = self.trigger.get_next_fire_time(None, dt.datetime.combine(issue.date, dt.time(), tzinfo=self.tz))
        if first is None or first > now:
            return  # its slot is still to come, or never comes
        state = self.state(issue.slug)
        open_slot = self.trigger.get_next_fire_time(None, max(first, now - self.grace))
        if open_slot is not None and open_slot <= now and open_slot.date() == first.date():
            window.append(_InWindow(issue, path, state))
        elif not state.complete:
            when = f"its slot was {first:%Y-%m-%d %H:%M %Z}, beyond [schedule] misfire_grace"
            why = (f"interrupted with {state.pending:,} pending; {when}" if state.started_at
                   else f"dated {issue.date}; {when}")
            hint = f"; send it by hand with {by_hand(path, self.list_name)}"
            if (now.date() - first.date()).days <= MISSED_DAYS:
                missed.append(PlanItem(path, issue.slug, why + hint))
            else:
                skipped.append(PlanItem(path, issue.slug, f"never sent automatically: {why}{hint}"))

    def _one_per_slot(self, window: list[_InWindow], now: dt.datetime, skipped: list[PlanItem]) -> list[PlanItem]:
        """Of the issues whose slot is open, the one this slot sends (the one that went at it, else the
        oldest unfinished); the others wait, and say so."""
        slot = latest_slot(self.trigger, now) or now
        window.sort(key=lambda found: (found.issue.date, found.issue.slug))
        went = [w for w in window if w.send.started_at and w.send.started_at >= slot]
        owner = went[0] if went else next((w for w in window if not w.send.complete), None)
        due = []
        for w in window:
            if w.send.complete or owner is None:
                continue
            if w is owner:
                what = "continues its interrupted send" if w.send.started_at else "due"
                due.append(PlanItem(w.path, w.issue.slug, f"dated {w.issue.date}, {what} at the slot of "
                                                             f"{slot:%Y-%m-%d %H:%M %Z} ({self.config.schedule.cron})"))
            else:
                verb = "went" if went else "goes"
                skipped.append(PlanItem(w.path, w.issue.slug, f"waiting: {owner.issue.slug} {verb} at this slot "
                                                                f"(at most one issue per slot); send it by hand with "
                                                                f"{by_hand(w.path, self.list_name)}"))
        return due


# -- the jobs ------------------------------------------------------------------------------------
# Referenced by import path in the job store, so they survive restarts; `runner` is passed in by
# the running scheduler's executor.


def _bound(runner: Runner | None) -> Runner:
    if runner is None:
        raise RuntimeError("a newsletter job runs only inside `newsletter scheduler`, which passes its runner")
    return runner


def run_weekly(config_path: str, list_name: str, *, runner: Runner | None = None) -> None:
    """The weekly job: send what is due to the list."""
    try:
        line = _bound(runner)(list_name, None)
    except NewsletterError as exc:
        log.error("weekly send to %s failed: %s", list_name, exc)
        raise
    log.info("weekly run: %s", line or f"nothing due for {list_name}")


def run_pinned(config_path: str, issue_path: str, list_name: str, *, runner: Runner | None = None) -> None:
    """The job for a send pinned to a time."""
    try:
        line = _bound(runner)(list_name, Path(issue_path))
    except NewsletterError as exc:
        log.error("pinned send of %s to %s failed: %s", issue_path, list_name, exc)
        raise
    log.info("pinned run: %s", line)


def _wake(**_context: object) -> None:
    """A no-op job: its runs make the scheduler look at the job store for newly pinned sends."""


def _chore(chore: Chore, **_context: object) -> None:
    """One run of a chore; its failure is logged and the next run tries again."""
    try:
        line = chore.run()
    except NewsletterError as exc:
        log.error("%s failed: %s", chore.name, exc)
        return
    if line:
        log.info("%s: %s", chore.name, line)


def _runner_executor(runner: Runner) -> BaseExecutor:
    """A thread pool that runs each job with this scheduler's `runner` as a keyword argument.

    Stored jobs hold only an import path and plain arguments; the runner (the front door's
    send, with its stop token) belongs to the scheduler instance, not to the process.
    """
    from apscheduler.executors.pool import ThreadPoolExecutor

    class RunnerExecutor(ThreadPoolExecutor):  # type: ignore[misc]
        def _do_submit_job(self, job: Job, run_times: list[dt.datetime]) -> None:
            bound = copy.copy(job)  # a copy made from the job's stored state, so set what that leaves out
            bound.kwargs = {**job.kwargs, "runner": runner}
            bound._scheduler, bound._jobstore_alias = job._scheduler, job._jobstore_alias
            super()._do_submit_job(bound, run_times)

    return RunnerExecutor(max_workers=4)


# -- the job store -------------------------------------------------------------------------------


def jobstore(store: Store) -> SQLAlchemyJobStore:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    return SQLAlchemyJobStore(engine=store.engine, tablename=JOB_TABLE)


def _make_job_table(store: Store, jobs: SQLAlchemyJobStore) -> None:
    """The job table, made in a write transaction that waits its turn (and waits out a short outage).

    APScheduler makes it in a deferred transaction, which SQLite refuses at once ("database is
    locked") when another connection wrote since that transaction read; once the table is there,
    APScheduler only looks.
    """
    def make() -> None:
        with store.write() as conn:
            jobs.jobs_t.create(conn, checkfirst=True)

    store.patiently(make)


@dataclass(frozen=True)
class ScheduledJob:
    id: str
    name: str
    next_run: dt.datetime | None
    args: tuple[Any, ...] = ()


class StoredJobs:
    """The job store read and written directly, for the commands that only look or pin.

    No scheduler is started for this: a scheduler started even paused runs a thread that may
    try to submit a stored job while it shuts down, and prints APScheduler's traceback into every
    cron log. The scheduler object here is never started; jobs need one to be rebuilt.

    Only a pin (`create`) makes the table. Reading a store that has none finds no jobs and writes
    nothing, so that two `send --due` at once do not race to create it.
    """

    def __init__(self, config: Config, store: Store, *, create: bool = False) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self._scheduler = BackgroundScheduler(timezone=timezone(config))
        self._jobs = jobstore(store)
        if create:
            _make_job_table(store, self._jobs)
        self._ready = create or sa.inspect(store.engine).has_table(JOB_TABLE)
        if self._ready:
            self._jobs.start(self._scheduler, "default")  # creates the table when missing; starts no thread

    def all(self) -> list[ScheduledJob]:
        if not self._ready:
            return []
        return [ScheduledJob(j.id, j.name, j.next_run_time, tuple(j.args)) for j in self._jobs.get_all_jobs()
                if j.id != WAKE_ID]

    def get(self, job_id: str) -> Job | None:
        job: Job | None = self._jobs.lookup_job(job_id) if self._ready else None
        return job

    def put(self, job_id: str, func: str, trigger: DateTrigger, args: list[str], name: str,
            misfire_grace: int) -> None:
        from apscheduler.job import Job
        from apscheduler.jobstores.base import ConflictingIdError

        when = trigger.get_next_fire_time(None, dt.datetime.now(dt.UTC))
        job = Job(self._scheduler, id=job_id, func=func, trigger=trigger, executor="default", args=args, kwargs={},
                  name=name, misfire_grace_time=misfire_grace, coalesce=True, max_instances=1, next_run_time=when)
        try:
            self._jobs.add_job(job)
        except ConflictingIdError:
            self._jobs.update_job(job)

    def remove(self, job_id: str) -> bool:
        from apscheduler.jobstores.base import JobLookupError

        if not self._ready:
            return False
        try:
            self._jobs.remove_job(job_id)
        except JobLookupError:
            return False
        return True


def pin(config: Config, store: Store, issue_path: Path, at: dt.datetime, list_name: str) -> tuple[str, dt.datetime]:
    """Pin a send of an issue to a time; returns the job id and the time (aware)."""
    issue = load(issue_path, config.newsletter)
    if issue.draft:
        raise ContentError(f"{issue_path}: the issue is a draft (draft: true); remove that line to pin it")
    tz = timezone(config)
    when = at if at.tzinfo else at.replace(tzinfo=tz)
    if when <= dt.datetime.now(dt.UTC):
        raise ConfigError(f"{when:%Y-%m-%d %H:%M %Z} has passed; pin a send to a future time")
    from apscheduler.triggers.date import DateTrigger

    job_id = f"{PIN_PREFIX}{issue.slug}:{list_name}"
    StoredJobs(config, store, create=True).put(
        job_id, "newsletter.schedule:run_pinned", DateTrigger(run_date=when, timezone=tz),
        [str(config.path), str(issue_path.resolve()), list_name], f"{issue.slug} to {list_name}",
        config.schedule.misfire_grace)
    return job_id, when


def jobs(config: Config, store: Store) -> list[ScheduledJob]:
    return StoredJobs(config, store).all()


def cancel(config: Config, store: Store, job_id: str) -> None:
    stored = StoredJobs(config, store)
    if not stored.remove(job_id):
        known = ", ".join(j.id for j in stored.all()) or "none"
        raise ConfigError(f"no scheduled job {job_id!r} (scheduled: {known})")


@dataclass(frozen=True)
class Pin:
    """A send pinned to a time, as cron and the scheduler both see it."""

    job_id: str
    issue_path: Path
    list_name: str
    at: dt.datetime

    @property
    def slug(self) -> str:
        return self.job_id[len(PIN_PREFIX):].rsplit(":", 1)[0]  # the id is pin:{slug}:{list}


def pins(config: Config, store: Store) -> list[Pin]:
    """Pinned sends still waiting, oldest first."""
    if not _any_pin(store):
        return []  # without importing APScheduler's job store and scheduler, a tenth of cron's minute
    found = [Pin(job.id, Path(job.args[1]), job.args[2], job.next_run) for job in StoredJobs(config, store).all()
             if job.id.startswith(PIN_PREFIX) and job.next_run is not None and len(job.args) == 3]
    return sorted(found, key=lambda pin: pin.at)


def _any_pin(store: Store) -> bool:
    """Whether the job store holds a pin, read with one query (no table: none)."""
    if not sa.inspect(store.engine).has_table(JOB_TABLE):
        return False
    table = sa.table(JOB_TABLE, sa.column("id"))
    with store.engine.connect() as conn:
        return conn.execute(sa.select(table.c.id).where(table.c.id.startswith(PIN_PREFIX)).limit(1)).first() is not None


def pin_done(config: Config, store: Store, job_id: str) -> None:
    """A pinned send was made (or missed) outside the scheduler: the scheduler must not run it again."""
    StoredJobs(config, store).remove(job_id)


def pinned_slugs(config: Config, store: Store) -> set[str]:
    """Slugs with a pinned send still waiting: the weekly rule leaves them alone."""
    return {pin.slug for pin in pins(config, store)}


# -- the long-running scheduler -------------------------------------------------------------------


def _on_event(event: JobExecutionEvent) -> None:
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED

    if event.code == EVENT_JOB_MISSED:
        log.error("MISSED: job %s was due at %s, outside the misfire grace period; it was not run "
                  "(send it by hand with `newsletter send`)", event.job_id, event.scheduled_run_time)
    elif event.code == EVENT_JOB_ERROR:
        log.error("job %s failed: %s", event.job_id, event.exception)


def build_scheduler(config: Config, store: Store, list_name: str, runner: Runner,
                    chores: tuple[Chore, ...] = ()) -> BaseScheduler:
    """A BlockingScheduler with the weekly job and the chores; pinned jobs are already in the store."""
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.blocking import BlockingScheduler

    weekly = trigger(config)
    jobs = jobstore(store)
    _make_job_table(store, jobs)
    scheduler = BlockingScheduler(
        jobstores={"default": jobs}, executors={"default": _runner_executor(runner)},
        timezone=timezone(config),
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": config.schedule.misfire_grace},
    )
    scheduler.add_listener(_on_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR)
    job_id = f"{WEEKLY_PREFIX}{list_name}"
    options: dict[str, Any] = {}
    existing = StoredJobs(config, store).get(job_id)
    if existing is not None and str(existing.trigger) == str(weekly) and existing.args == [str(config.path), list_name]:
        # Re-adding would recompute the next run from now and silently drop a run missed while
        # the scheduler was down; keep the stored one so the misfire rules apply to it.
        options["next_run_time"] = existing.next_run_time
    else:
        # A first start (or a changed schedule) after a slot within the grace period: run it now.
        now = dt.datetime.now(timezone(config))
        recent = weekly.get_next_fire_time(None, now - dt.timedelta(seconds=config.schedule.misfire_grace))
        if recent is not None and recent <= now:
            options["next_run_time"] = recent
    scheduler.add_job("newsletter.schedule:run_weekly", weekly, id=job_id, name=f"weekly send to {list_name}",
                      args=[str(config.path), list_name], replace_existing=True, **options)
    scheduler.add_job("newsletter.schedule:_wake", "interval", seconds=WAKE_SECONDS, id=WAKE_ID,
                      replace_existing=True)
    if chores:  # held in memory: a chore is this process's own callable, not a stored job
        scheduler.add_jobstore(MemoryJobStore(), "chores")
    for chore in chores:
        scheduler.add_job(_chore, "interval", args=[chore], seconds=chore.seconds, id=f"chore-{chore.name}",
                          name=chore.name, jobstore="chores", next_run_time=dt.datetime.now(timezone(config)),
                          misfire_grace_time=None)  # a chore run late is still worth running
    return scheduler


_AT = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}$")


def parse_at(text: str) -> dt.datetime:
    """'YYYY-MM-DD HH:MM' (in the schedule's zone) as a naive datetime."""
    if not _AT.match(text.strip()):
        raise ConfigError(f"--at {text!r}: use 'YYYY-MM-DD HH:MM'")
    try:
        return dt.datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError as exc:
        raise ConfigError(f"--at {text!r}: {exc}") from None


def run_scheduler(config: Config, store: Store, list_name: str, runner: Runner, stop: StopToken,
                  chores: tuple[Chore, ...] = ()) -> None:
    """Run until `stop` says so. A second scheduler on the same store refuses to start."""
    from apscheduler.events import EVENT_JOB_EXECUTED
    from apscheduler.schedulers import SchedulerNotRunningError

    should_stop = stop_check(stop)
    trigger(config)  # configuration errors now, not at the first run
    with store.lock("scheduler", "another `newsletter scheduler` is running on this store; only one may run at a "
                    "time") as lost:
        scheduler = build_scheduler(config, store, list_name, runner, chores)

        finished = threading.Event()

        def watch() -> None:
            # Polled: a stop token set by a signal handler cannot be waited on.
            while not should_stop() and not lost.is_set():
                time.sleep(0.1)
            while not finished.is_set():
                try:
                    scheduler.shutdown(wait=True)  # lets a running send finish its batch
                    return
                except SchedulerNotRunningError:  # not started yet: wait for it
                    finished.wait(0.05)

        threading.Thread(target=watch, name="stop-watch", daemon=True).start()
        # Not scheduler.get_jobs() here: a listener runs in the job's thread, and shutdown holds
        # the job store lock while it waits for that thread.
        def executed(event: JobExecutionEvent) -> None:
            if event.job_id != WAKE_ID and not event.job_id.startswith("chore-"):
                log.info("next run: %s", next_run(config))

        scheduler.add_listener(executed, EVENT_JOB_EXECUTED)
        log.info("scheduler started for list %s (%s, %s); next runs: %s", list_name, config.schedule.cron,
                 config.schedule.timezone, next_run(config))
        try:
            scheduler.start()
        finally:
            finished.set()
        if lost.is_set():
            raise LockedError("this scheduler lost its lock on the store to another `newsletter scheduler` and "
                              "stopped; only one may run at a time")
    log.info("scheduler stopped")


def next_run(config: Config) -> str:
    weekly = trigger(config)
    now = dt.datetime.now(timezone(config))
    upcoming = weekly.get_next_fire_time(None, now)
    return f"weekly send at {upcoming:%Y-%m-%d %H:%M %Z}" if upcoming else "none"
