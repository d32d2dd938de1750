"""`nl.schedule`: the due plan, what cron and the scheduler send, pinned sends, the scheduler loop."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .part import Part

if TYPE_CHECKING:
    from ..pacing import StopToken
    from ..schedule import DuePlan
    from ..send import SendReport


WELCOME_EVERY = 60  # seconds between the scheduler's passes over the welcome mails
ALERTS_EVERY = 60  # seconds between the scheduler's looks for stalled sends and refusals, and its pushes


@dataclass(frozen=True)
class DueRun:
    """What `due` did: the report of the send it ran, if any, and a line for the log."""

    report: SendReport | None
    line: str
    exit_code: int


@dataclass(frozen=True)
class ScheduledRun:
    id: str
    description: str
    next_run: dt.datetime | None  # in the schedule's zone; None when paused


@dataclass(frozen=True)
class Timetable:
    """What `schedule list` shows: the runs to come, and the due plan of `[schedule] list` (if set)."""

    runs: list[ScheduledRun]
    plan: DuePlan | None


class Schedule(Part):
    def plan(self, list_name: str | None = None, *, now: dt.datetime | None = None) -> DuePlan:
        """What `send --due` and the scheduler send now, what is missed or left alone and why, and what
        the next slot sends: the one due rule (see `newsletter.schedule`)."""
        from .. import schedule

        return schedule.plan_due(self.config, self.store, self.config.list_or_default(list_name), now)

    def due(self, list_name: str | None = None, *, issue_path: str | os.PathLike[str] | None = None,
            now: dt.datetime | None = None, stop: StopToken = None) -> DueRun:
        """Send what the plan says is due to the list (or `issue_path`, a pinned job's issue): what cron
        and the scheduler run. Missed sends are reported (exit code 1), never sent late.

        Pins come first and leave the job store once their send has no pending rows (or was
        missed), so cron and a running scheduler agree; the ledger makes a send that both start
        happen once. Drafts are never sent from here. Then every list's welcome mails whose day
        has come. Quiet when nothing is due or missed.
        """
        from .. import schedule

        name = self.config.list_or_default(list_name)
        schedule.trigger(self.config)  # a bad schedule is an error before anything is sent
        if issue_path is not None:
            return self._send_if_not_draft(Path(issue_path), name, stop)
        plan = schedule.plan_due(self.config, self.store, name, now, bodies=False)
        lines: list[str] = []
        exit_code, last = 0, None
        for passed in plan.missed:
            if passed.pin is not None:
                schedule.pin_done(self.config, self.store, passed.pin.job_id)
            what = passed.pin.job_id if passed.pin else str(passed.path)
            lines.append(f"MISSED: {what} ({passed.why}): not sent")
            self._nl.alerts.missed(name, passed.pin.job_id if passed.pin else passed.slug, passed.why)
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
        else:
            welcomed = self._nl.welcome.send_due(stop=stop)  # anything the web app left, on every list
            lines.append(welcomed.line)
            exit_code = max(exit_code, welcomed.exit_code)
        self._nl.alerts.watch()
        return DueRun(last, "\n".join(line for line in lines if line), exit_code)

    def _send_if_not_draft(self, path: Path, list_name: str, stop: StopToken) -> DueRun:
        parsed = self._nl.issues.load(path)
        if parsed.draft:
            return DueRun(None, f"{path}: not sent: the issue is a draft (draft: true)", 0)
        # A named segment of another list is refused, as for `send --segment`.
        _list, segment = self._nl.sends.segment(list_name, self.config.schedule.segment)
        report = self._nl.sends.send(parsed, list_name, stop=stop, segment=segment)  # joins a send already running
        return DueRun(report, report.summary(), report.exit_code)

    def pin(self, issue_path: str | os.PathLike[str], at: str, list_name: str | None = None) -> tuple[str, dt.datetime]:
        """Pin a send of the issue to 'YYYY-MM-DD HH:MM' in the schedule's zone; returns the job id and time."""
        from .. import schedule

        name = self.config.list_or_default(list_name)
        return schedule.pin(self.config, self.store, Path(issue_path), schedule.parse_at(at), name)

    def cancel(self, job_id: str) -> None:
        """Remove a pinned send."""
        from .. import schedule

        schedule.cancel(self.config, self.store, job_id)

    def timetable(self) -> Timetable:
        """The weekly slot (and what it sends), the pinned sends, and the plan of `[schedule] list`."""
        from .. import schedule

        tz = schedule.timezone(self.config)
        runs, plan = [], None
        if self.config.schedule.list:
            name = self.config.list_or_default(self.config.schedule.list)
            plan = schedule.plan_due(self.config, self.store, name)
            runs.append(ScheduledRun(f"{schedule.WEEKLY_PREFIX}{name}",
                                     f"weekly send ({self.config.schedule.cron}), {plan.next_sends}", plan.next_slot))
        for job in schedule.jobs(self.config, self.store):
            if not job.id.startswith(schedule.WEEKLY_PREFIX):
                runs.append(ScheduledRun(job.id, job.name, job.next_run.astimezone(tz) if job.next_run else None))
        return Timetable(runs, plan)

    def write_systemd(self, command: list[str], folder: str | os.PathLike[str] | None = None) -> list[Path]:
        """The systemd units for this project (cron's way, the scheduler's, the web app's, the bounce
        mailbox's), written into `folder` (default: `systemd/` beside the config); `command` runs
        newsletter. Refuses, writing nothing, if one is there already."""
        from .. import systemd

        return systemd.write(self.config, command, folder if folder is not None else self.config.root / "systemd")

    def run(self, list_name: str | None = None, *, stop: StopToken) -> None:
        """Run the weekly schedule and pinned sends until `stop` says so (blocks)."""
        from .. import schedule

        name = self.config.list_or_default(list_name)

        def runner(list_: str, issue_path: Path | None) -> str:
            return self.due(list_, issue_path=issue_path, stop=stop).line

        chores: list[schedule.Chore] = []
        box = self.config.bounces.mailbox
        if box.host:
            chores.append(schedule.Chore("bounce mailbox", box.every, lambda: self._nl.bounces.fetch().line))
        if any(declared.onboarding for declared in self.config.lists.values()):
            chores.append(schedule.Chore("welcome mails", WELCOME_EVERY,
                                         lambda: self._nl.welcome.send_due(stop=stop).line))
        if self._nl.alerts.configured:
            chores.append(schedule.Chore("alerts", ALERTS_EVERY, self._watch))
        if self.config.metrics.pushgateway:  # a long run's figures reach Prometheus while it runs
            chores.append(schedule.Chore("metrics", ALERTS_EVERY,
                                         lambda: "; ".join(self._nl.monitoring.publish("scheduler"))))
        schedule.run_scheduler(self.config, self.store, name, runner, stop, tuple(chores))

    def _watch(self) -> str:
        self._nl.alerts.watch()
        return ""
