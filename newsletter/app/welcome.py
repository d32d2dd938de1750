"""`nl.welcome`: each list's welcome mail and sequence, sent once to every member who joins."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .part import Part

if TYPE_CHECKING:
    from ..pacing import StopToken
    from ..send import SendReport
    from ..welcome import Mail


@dataclass(frozen=True)
class WelcomeRun:
    """What one pass over the welcome mails did: a report per mail that had anyone due."""

    reports: list[SendReport] = field(default_factory=list)

    @property
    def line(self) -> str:
        """A line per mail sent to anyone; "" when nobody was due (cron's minute stays quiet)."""
        return "\n".join(f"welcome mail {r.summary()}" for r in self.reports)

    @property
    def exit_code(self) -> int:
        """1 when this pass failed anyone or left anyone unknown; a later mail of a sequence that waits
        for its day is not unfinished work."""
        return int(any(r.this_run["failed"] or r.this_run["unknown"] for r in self.reports))


class Welcome(Part):
    def mails(self, list_name: str) -> list[Mail]:
        """The mails a member who joins `list_name` now is enrolled in (ContentError for a broken file)."""
        from ..content import heading
        from ..welcome import Mail

        declared = self.config.list(list_name)
        mails = []
        for step in declared.onboarding:
            issue = heading(self.config.root / step.issue, self.config.newsletter)
            mails.append(Mail(issue.slug, issue.subject, step.days))
        return mails

    def check(self) -> None:
        """Read every list's welcome files now: one broken is a one-line ContentError before the web app
        takes a confirmation, not an error at the first one."""
        for name in self.config.lists:
            self.mails(name)

    def due(self, list_name: str, *, now: dt.datetime | None = None) -> list[tuple[str, Mail]]:
        """(file, mail) of each of the list's welcome mails with a member whose day has come."""
        from .. import welcome
        from ..sql import now as utc_now

        declared = self.config.list(list_name)
        mails = self.mails(list_name) if declared.onboarding else []
        if not mails:
            return []
        list_id = self.store.list_id(list_name)
        with self.store.engine.connect() as conn:
            return [(step.issue, mail) for step, mail in zip(declared.onboarding, mails, strict=True)
                    if list_id and welcome.waiting(conn, mail.slug, list_id, now or utc_now())]

    def send_due(self, list_name: str | None = None, *, stop: StopToken = None) -> WelcomeRun:
        """Send every welcome mail whose day has come to the members waiting for it (of `list_name`, or of
        every list): what the web app does after a confirmation, and `send --due` and the scheduler
        each time they run. Each member gets each mail once, however many processes do this at once."""
        run = WelcomeRun()
        for name in [list_name] if list_name else list(self.config.lists):
            for path, _mail in self.due(name):
                mailing = self._nl.sends.mailing(self.config.root / path, name)
                report = self._nl.sends.deliver(mailing, stop=stop, enrolled=True)
                run.reports.append(report)
                if report.stopped:
                    return run
        return run
