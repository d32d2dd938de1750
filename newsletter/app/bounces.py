"""`nl.bounces`: the bounce mailbox that SMTP's bounces and complaints come back to."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .part import Part

if TYPE_CHECKING:
    from ..bounce_loop import FetchReport
    from ..mailbox import Mailbox


class Bounces(Part):
    def fetch(self, mailbox: Mailbox | None = None) -> FetchReport:
        """Read every message waiting in the bounce mailbox once: hard bounces and complaints suppress,
        soft ones count toward `[bounces] soft_limit`, the sender's own failures are reported and never
        suppress. MailboxError when the mailbox cannot be read; ConfigError when none is configured."""
        from .. import bounce_loop, mailbox as mailboxes, tokens

        settings = self.config.bounces
        if mailbox is None:
            box = settings.mailbox
            if not box.host:
                raise ConfigError(f"{self.config.path}: [bounces.mailbox] host is not set: there is no bounce mailbox "
                                  f"to read")
            mailbox = mailboxes.open_mailbox(box, os.environ.get(box.password_env, ""))
        paths = (tokens.ReturnPath(settings.verp_address, self.config.secret(), self.config.previous_secrets())
                 if settings.verp_address else None)
        metrics = self._nl.monitoring.metrics
        try:
            with self.store.lock(f"bounces {mailbox.name}", f"another `bounces fetch` is reading {mailbox.name}; "
                                                            f"it runs one at a time per mailbox"):
                report = bounce_loop.fetch(self.store, mailbox, settings, paths)
        except BaseException:
            metrics.mailbox_runs.labels("error").inc()
            raise
        finally:
            mailbox.close()
        metrics.mailbox_runs.labels("read").inc()
        for kind, count in report.classes.items():
            metrics.mailbox_messages.labels(kind).inc(count)
        if report.sender_side:
            self._nl.alerts.sender_wave()
        return report
