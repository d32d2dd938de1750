"""`nl.alerts`: tell the operator when something goes wrong, once per incident, by mail and/or a webhook.

What is watched: a send run that ends with failures or unknown rows above `[alerts] failure_rate`,
or with an error; a send with rows pending and no progress for `stalled_minutes`; a wave of
sender-side refusals; repeated webhook signature failures; a missed slot. The incidents live in
the store (`alerts`), so cron runs, the scheduler and `serve` agree on what was already said.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import os
import time
from collections import defaultdict, deque
from contextlib import closing
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ConfigError, NewsletterError
from .part import Part

if TYPE_CHECKING:
    from ..alerts import Alert, Channel
    from ..send import SendReport
    from . import Newsletter

log = logging.getLogger("newsletter.alerts")
SIGNATURE_WINDOW = 3600.0  # seconds over which a provider's refused webhook calls are counted


class Alerts(Part):
    def __init__(self, nl: Newsletter) -> None:
        super().__init__(nl)
        self._refused: defaultdict[str, deque[float]] = defaultdict(deque)  # this process's refused webhook calls

    @property
    def configured(self) -> bool:
        settings = self.config.alerts
        return bool(settings.email or settings.webhook_url or settings.webhook_url_env)

    def after_send(self, issue: str, list_name: str, report: SendReport | None, error: BaseException | None) -> None:
        """A send run ended: with an error, or with more of its rows failed or unknown than the threshold."""
        from ..alerts import Alert

        where = f"{issue}:{list_name}"
        if report is None:
            if isinstance(error, NewsletterError):
                self._open(Alert(f"send-error:{where}", f"The send of {issue} to {list_name} stopped with an error",
                                 f"{error}\nThe rows not sent stay pending: `newsletter send` it again once this is "
                                 f"fixed."))
            return
        self._resolve(f"send-error:{where}")
        counts = report.counts
        total = sum(counts.values()) - counts.get("skipped", 0)
        bad = counts.get("failed", 0) + counts.get("unknown", 0)
        if total and bad / total > self.config.alerts.failure_rate:
            self._open(Alert(f"send-failures:{where}", f"{bad:,} of {total:,} messages of {issue} to {list_name} "
                                                       f"failed or are unknown",
                             f"{bad / total:.1%} of the send, over [alerts] failure_rate "
                             f"({self.config.alerts.failure_rate:.1%}): {counts.get('failed', 0):,} failed, "
                             f"{counts.get('unknown', 0):,} unknown. `newsletter status {issue} --list {list_name}` "
                             f"lists them and why."))

    def missed(self, list_name: str, what: str, why: str) -> None:
        """A slot or a pin passed without its send (`send --due` reports it for a week; this says it once)."""
        from ..alerts import Alert

        self._open(Alert(f"missed:{list_name}:{what}", f"{what} was not sent to {list_name}: its time passed",
                         f"{why}. It is never sent late by itself: `newsletter send` it by hand if it should go."))

    def watch(self) -> None:
        """Look at the store for sends that stopped moving and for a wave of sender-side refusals (cron's
        `send --due` and the scheduler do this each time they run); deliver what is waiting."""
        if not self.configured:
            return
        from .. import alerts
        from ..alerts import Alert

        settings = self.config.alerts
        now_stalled = set()
        for issue, list_name, pending, moved in alerts.stalled(self.store, settings.stalled_minutes):
            key = f"stalled:{issue}:{list_name}"
            now_stalled.add(key)
            self._open(Alert(key, f"The send of {issue} to {list_name} has not moved for {settings.stalled_minutes} "
                                  f"minutes", f"{pending:,} messages wait; the last one was sent at "
                                              f"{moved:%Y-%m-%d %H:%M} UTC. Is a `newsletter send` running? "
                                              f"`newsletter status {issue} --list {list_name}` says who holds them."),
                       deliver=False)
        alerts.resolve_all(self.store, "stalled:", now_stalled)
        self.sender_wave(deliver=False)
        self.deliver()

    def sender_wave(self, *, deliver: bool = True) -> None:
        """Sender-side refusals (DMARC, authentication, a blocklisted address) come back in a wave: the
        sending setup is at fault, and they suppress nobody, so only the operator can act."""
        from .. import alerts
        from ..alerts import Alert

        settings = self.config.alerts
        if not self.configured:
            return
        count = alerts.sender_refusals(self.store, settings.sender_window_minutes)
        if count < settings.sender_bounces:
            self._resolve("sender-refusals")
            return
        self._open(Alert("sender-refusals", f"{count:,} messages refused for the sender's setup in "
                                            f"{settings.sender_window_minutes} minutes",
                         "Receiving servers refused them for the sending side (DMARC, SPF or DKIM, a blocklisted "
                         "address or domain), not for the recipients, who stay subscribed. Check the sending "
                         "domain's DNS and the provider's dashboard; `newsletter report` shows them as blocked."),
                   deliver=deliver)

    def signature_failure(self, provider: str, at: float | None = None) -> None:
        """A webhook call refused for its signature: one is noise, many are a changed key or an attack."""
        from ..alerts import Alert

        recent = self._recent(provider, time.time() if at is None else at, add=True)
        limit = self.config.alerts.signature_failures
        if recent >= limit:
            self._open(Alert(f"signatures:{provider}", f"{recent} {provider} webhook calls refused for their signature "
                                                       f"within the hour",
                             f"Events from {provider} are not being recorded. If the provider's signing key or "
                             f"password changed, update the config; otherwise someone is posting forged events."))

    def signature_ok(self, provider: str, at: float | None = None) -> None:
        """A verified call: once the refused ones of the hour are under the threshold, that incident is over
        (looked at only after this process saw refusals: a verified call costs no write otherwise)."""
        if provider not in self._refused:
            return
        if self._recent(provider, time.time() if at is None else at, add=False) < self.config.alerts.signature_failures:
            self._resolve(f"signatures:{provider}")
            if not self._refused[provider]:
                del self._refused[provider]

    def deliver(self) -> list[str]:
        """Send every open incident not yet delivered on each channel; the one-line problems of those that
        could not be (they are tried again next time)."""
        from .. import alerts

        if not self.configured:
            return []
        problems = []
        for channel in alerts.CHANNELS:
            if not self._channel_set(channel):
                continue
            for alert in alerts.take(self.store, channel):
                problem = self._send(channel, alert)
                if problem:
                    alerts.give_back(self.store, channel, alert)
                    problems.append(problem)
                    log.warning("alert %s not delivered: %s", alert.key, problem)
        return problems

    def test(self) -> list[tuple[str, str]]:
        """One test alert on each configured channel: (where it went, "" or what went wrong). ConfigError
        when no channel is configured."""
        from ..alerts import CHANNELS, Alert

        if not self.configured:
            raise ConfigError(f"{self.config.path}: [alerts] has no email, webhook_url or webhook_url_env: there is "
                              f"nowhere to send alerts")
        alert = Alert("test", f"Test alert from {self.config.newsletter.name}",
                      "`newsletter alerts test` sent this; real alerts come here the same way.")
        return [(self._where(channel), self._send(channel, alert)) for channel in CHANNELS
                if self._channel_set(channel)]

    def open(self) -> list[str]:
        """The keys of the incidents not over yet, oldest first."""
        from .. import alerts

        return alerts.open_keys(self.store)

    def _open(self, alert: Alert, *, deliver: bool = True) -> None:
        """Open the incident; alert on it if this opened it. Never raises: watching must not break a send."""
        if not self.configured:
            return
        from .. import alerts

        try:
            if alerts.open_incident(self.store, alert) and deliver:
                self.deliver()
        except Exception as exc:  # noqa: BLE001 - the store may be what is wrong; the run's own error stands
            log.warning("alert %s could not be recorded: %s", alert.key, exc)

    def _resolve(self, key: str) -> None:
        if not self.configured:
            return
        from .. import alerts

        try:
            alerts.resolve(self.store, key)
        except Exception as exc:  # noqa: BLE001 - as for _open
            log.warning("alert %s could not be closed: %s", key, exc)

    def _recent(self, provider: str, at: float, *, add: bool) -> int:
        times = self._refused[provider]
        if add:
            times.append(at)
        while times and times[0] <= at - SIGNATURE_WINDOW:
            times.popleft()
        return len(times)

    def _webhook_url(self) -> str:
        settings = self.config.alerts
        return settings.webhook_url or (os.environ.get(settings.webhook_url_env, "") if settings.webhook_url_env
                                        else "")

    def _channel_set(self, channel: Channel) -> bool:
        if channel == "mailed_at":
            return bool(self.config.alerts.email)
        if self.config.alerts.webhook_url_env and not self._webhook_url():
            log.warning("[alerts] webhook_url_env: %s is not set; no webhook alert", self.config.alerts.webhook_url_env)
            return False
        return bool(self._webhook_url())

    def _where(self, channel: Channel) -> str:
        if channel == "mailed_at":
            return f"mail to {self.config.alerts.email}"
        return f"webhook at {urlsplit(self._webhook_url()).hostname}"  # its path may be a secret: never shown

    def _send(self, channel: Channel, alert: Alert) -> str:
        """Deliver one alert on one channel: "" when done, else what went wrong (naming no secret)."""
        try:
            return self._mail(alert) if channel == "mailed_at" else self._post(alert)
        except NewsletterError as exc:
            return f"{self._where(channel)}: {exc}"
        except OSError as exc:
            return f"{self._where(channel)}: {type(exc).__name__}: {exc}"

    def _mail(self, alert: Alert) -> str:
        from ..providers import Envelope, Recipient
        from ..render import Rendered

        settings = self.config.newsletter
        body = f"{alert.text}\n\n-- \n{settings.name}: alert {alert.key}"
        page = f"<html><body><pre style=\"white-space:pre-wrap\">{html.escape(body)}</pre></body></html>"
        rendered = Rendered(slug="alert", date=dt.date.today(), subject=f"[{settings.name}] {alert.title}",
                            preheader=alert.title, html=page, text=body, size=len(page.encode()))
        envelope = Envelope(rendered=rendered, from_email=settings.from_email, from_name=settings.name,
                            reply_to=settings.reply_to, category="alert",
                            list_id=f"{settings.name} alerts <alerts.{settings.from_email.rpartition('@')[2]}>")
        with closing(self._nl.provider()) as provider:
            results = provider.send(envelope, [Recipient(0, self.config.alerts.email, "", {}, "")])
        if results and results[0].status == "sent":
            return ""
        said = results[0].error or results[0].status if results else "not attempted"
        return f"{self._where('mailed_at')}: {said}"

    def _post(self, alert: Alert) -> str:
        import httpx

        try:
            response = httpx.post(self._webhook_url(), json={"text": f"*{alert.title}*\n{alert.text}"},
                                  timeout=self.config.alerts.timeout)
        except httpx.HTTPError as exc:
            return f"{self._where('posted_at')}: {type(exc).__name__}"
        return "" if response.is_success else f"{self._where('posted_at')}: answered {response.status_code}"

