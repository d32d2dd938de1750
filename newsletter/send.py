"""Sending an issue: the one place that joins a rendered issue, the store, the ledger and a provider.

The guarantees: recipients are fixed when a send starts; a row is claimed (in_flight) before
the provider is called and marked after, so a crash leaves `unknown` rows, never a silent
re-send; members who leave mid-send are skipped at claim time; several processes may share one
send, each row going to one of them (see `ledger`).
"""

from __future__ import annotations

import functools
import json
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import compat, placeholders, tokens
from .config import Config
from .errors import ProviderError, StoreUnavailable, TokenError
from .files import atomic_write
from .ledger import Claimed, LeaseLost, Ledger
from .pacing import Meter, Pacer, StopToken, stop_check
from .providers.base import Envelope, Provider, Recipient, Result
from .render import Rendered
from .schema import FAILED, IN_FLIGHT, PENDING, SENT, SKIPPED, UNKNOWN
from .store import Store
from .templates import Templates

TEST_PREFIX = "[TEST] "
NOT_FINISHED = 3  # the exit code of a send that stopped with rows still pending


class Mailing:
    """One rendered issue addressed to one list: builds each recipient's values and links."""

    def __init__(self, config: Config, rendered: Rendered, list_name: str, *, dry_run: bool = False,
                 from_header: str = "", reply_to: str = "") -> None:
        self.config, self.rendered, self.list_name = config, rendered, list_name
        self.base_url = config.require_base_url()
        declared = config.list(list_name)
        self.warnings: list[str] = []
        try:
            self._signer: tokens.Signer | None = tokens.unsubscribe_signer(config.secret())
        except TokenError:
            if not dry_run:
                raise
            self._signer = None
            self.warnings.append(f"{config.newsletter.secret_env} is not set: unsubscribe links in this dry run "
                                 f"are placeholders, and a real send will refuse to start")
        nl = config.newsletter
        from_name, from_email = nl.from_name, nl.from_email
        if from_header:
            from_name, from_email = parseaddr(from_header)
        host = urlsplit(self.base_url).hostname or "localhost"
        self.view_url = f"{self.base_url}/archive/{rendered.slug}"
        # The view-in-browser link is the same for everyone: fill it once, not per recipient. The
        # unsubscribe and preference links differ only by their token: each recipient carries the token
        # alone, once however many links use it (a provider that substitutes sends it once).
        shared = {"view_url": self.view_url}
        rendered = replace(
            rendered,
            html=placeholders.link_tokens(placeholders.fill(rendered.html, shared, html_escape=True, only=True),
                                          self.base_url, html_escape=True),
            text=placeholders.link_tokens(placeholders.fill(rendered.text, shared, html_escape=False, only=True),
                                          self.base_url, html_escape=False),
        )
        self.rendered = rendered
        self._uses_attributes = any("%%attr." in part for part in (rendered.html, rendered.text, rendered.subject))
        bounces = config.bounces
        feedback = ":".join(part.replace(":", "-") for part in
                            (rendered.slug, list_name, "newsletter", from_email.rpartition("@")[2]))
        self.envelope = Envelope(
            rendered=rendered, from_email=from_email, from_name=from_name, reply_to=reply_to or nl.reply_to,
            list_id=f"{declared.title} <{list_name}.{host}>", category=rendered.slug,
            custom_args={"issue": rendered.slug, "list": list_name}, unsubscribe_mailto=nl.unsubscribe_mailto,
            feedback_id=feedback, complaint_address=bounces.complaint_address,
        )
        self._return_path = (tokens.ReturnPath(bounces.verp_address, config.secret())
                             if bounces.verp_address and self._signer else None)

    def recipients(self, claimed: list[Claimed]) -> list[Recipient]:
        """Each claimed row's recipient: values, signed unsubscribe link, return path."""
        base, slug, view_url = f"{self.base_url}/unsubscribe/", self.rendered.slug, self.view_url
        if self._signer is not None:
            signed = self._signer.make_tagged([(c.subscriber_id, c.email) for c in claimed], self.list_name, slug)
        else:
            signed = ["dry-run"] * len(claimed)
        # The preference page takes the same token as the unsubscribe link: one signature per recipient.
        preferences = f"{self.base_url}/preferences/"
        attributes, verp, values = self._uses_attributes, self._return_path, placeholders.recipient_values
        make = Recipient._make
        return [make((
            c.subscriber_id, c.email, c.name,
            values(c.email, c.name, c.attributes if attributes else {}, url, view_url, preferences + token, token),
            url, {"subscriber": str(c.subscriber_id)}, verp.make(slug, c.subscriber_id) if verp else "",
        )) for c, token, url in zip(claimed, signed, [base + token for token in signed], strict=True)]

    def recipient(self, claimed: Claimed) -> Recipient:
        return self.recipients([claimed])[0]


def audience(segment: str) -> tuple[str, Any] | None:
    """A segment expression with its compiled condition, for the ledger to fix a send's rows to; None
    for the whole list. SegmentError for an expression that is not one."""
    from .segments import where

    return (segment, where(segment)) if segment else None


@dataclass
class SendReport:
    issue: str
    list_name: str
    counts: dict[str, int]
    this_run: Counter[str] = field(default_factory=Counter)
    skipped_reasons: Counter[str] = field(default_factory=Counter)
    recovered: int = 0
    duration: float = 0.0
    stopped: str = ""
    problems: list[tuple[str, str, str, int]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 only when the send is complete; 1 when someone failed, is unknown, or was deferred by the
        server and still waits; 3 when it stopped with rows pending (--limit, a stop, a lost lease) or
        still held by another worker.
        The CLI reports a stop by a signal as 128 + the signal's number instead, as shells do."""
        waiting = self.this_run["deferred"] and self.counts.get(PENDING)
        if self.counts.get(FAILED) or self.counts.get(UNKNOWN) or waiting:
            return 1
        return NOT_FINISHED if self.counts.get(PENDING) or self.counts.get(IN_FLIGHT) else 0

    def summary(self) -> str:
        """One line for logs: what this run did and what is left."""
        run = self.this_run
        return (f"{self.issue} to {self.list_name}: sent {run[SENT]}, failed {run[FAILED]}, unknown {run[UNKNOWN]}, "
                f"skipped {run[SKIPPED]}, deferred {run['deferred']}, pending {self.counts.get(PENDING, 0)} "
                f"in {self.duration:.1f} s"
                + (f" ({self.stopped})" if self.stopped else ""))


def send(store: Store, mailing: Mailing, provider: Provider, *, limit: int | None = None,
         max_rate: float | None = None, resend_unknown: bool = False,
         progress: Callable[[int, int], None] | None = None, stop: StopToken = None,
         sleep: Callable[[float], None] | None = None, lease: float = 60.0,
         concurrency: int | None = None, segment: str = "", enrolled: bool = False,
         meter: Meter | None = None) -> SendReport:
    """Send (or continue sending) the mailing to its list as one worker. See the module docstring.

    `enrolled`: a welcome mail, sent to the members enrolled in it as they joined (`welcome`), never
    to the list as a whole.

    Up to `concurrency` batches (default: the provider's `max_in_flight`) are with the provider
    at once. `stop` is looked at before each claim and during every wait: once it is set, the
    batches with the provider finish and are recorded, and the rest stays pending. Other
    processes sending the same issue to the same list share the work through the ledger. `meter`
    hears of every provider request and throttle wait (the metrics).
    """
    provider.check(mailing.envelope)  # a message that can never be sent stops here, before any claim
    ledger = Ledger(store, mailing.rendered.slug, mailing.list_name, segment=audience(segment), enrolled=enrolled)
    report = SendReport(mailing.rendered.slug, mailing.list_name, {})
    report.recovered = ledger.recover(lease, resend_unknown=resend_unknown)
    ledger.start(mailing.rendered.subject, events=provider.reports_events)
    dispatch = _Dispatch(ledger, mailing, provider, report, stop_check(stop), limit=limit, max_rate=max_rate,
                         progress=progress, sleep=sleep, lease=lease, concurrency=concurrency, meter=meter)
    return dispatch.run()


_Returned = tuple[int, list[Recipient], Future[list[Result]]]  # (claim, its recipients, the provider's answer)
_Unrecorded = tuple[int, list[Recipient], list[Result]]


class _Dispatch:
    """One worker's send: waits for a free slot and the pacer, claims a batch, hands it to a provider
    thread, and records each batch as it comes back; whatever stops it, every batch handed over is
    recorded (or held while the store is away) before it returns."""

    def __init__(self, ledger: Ledger, mailing: Mailing, provider: Provider, report: SendReport,
                 should_stop: Callable[[], bool], *, limit: int | None, max_rate: float | None,
                 progress: Callable[[int, int], None] | None, sleep: Callable[[float], None] | None, lease: float,
                 concurrency: int | None, meter: Meter | None) -> None:
        self.ledger, self.mailing, self.provider, self.report = ledger, mailing, provider, report
        self.limit, self.progress, self.lease = limit, progress, lease
        self.worker = ledger.register()
        self.beat = _Heartbeat(ledger, self.worker, lease, report)
        # Every wait, and every provider call of every batch, stops as soon as the lease may be gone.
        self.pacer = Pacer(max_rate=max_rate, stop=lambda: should_stop() or not self.beat.holds(), sleep=sleep,
                           meter=meter)
        self.total = ledger.counts()[PENDING]
        self.slots = max(1, concurrency or provider.max_in_flight)
        self.finished: queue.Queue[_Returned] = queue.Queue()
        self.pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="provider")
        self.in_flight = self.handed = self.claims = 0
        self.exhausted = False  # nothing left to claim
        self.failure: ProviderError | None = None
        self.outage: StoreUnavailable | None = None
        self.unrecorded: list[_Unrecorded] = []  # held while the store is away

    def run(self) -> SendReport:
        started = time.monotonic()
        self.beat.start()
        try:
            self.provider.prepare(self.pacer)
            self._dispatch()
            if not self.report.stopped and self.failure is None and self.outage is None:
                self.report.stopped = _wait_for_others(self.ledger, self.worker, self.lease, self.pacer)
        except StoreUnavailable as exc:
            self.outage = exc
        finally:
            self._finish(started)
        if self.outage is not None and (self.unrecorded or not self.report.counts):
            raise _gave_up(self.outage, self.unrecorded, self.total - self.handed)
        if self.failure is not None:
            raise self.failure
        return self.report

    def _dispatch(self) -> None:
        while True:
            self._record_returned()
            if self._stopping() or self.in_flight >= self.slots:
                if self.in_flight == 0:
                    return
                self._record(self.finished.get())
            elif self.limit is not None and self.handed >= self.limit:
                self.report.stopped = f"--limit {self.limit} reached"
            else:
                claimed = self._claim(self._want())
                if claimed:
                    self._hand(claimed)

    def _want(self) -> int:
        """The next batch's size: the provider's, at most a second's worth of the rate (which a provider
        may lower once it has read its account's), within any limit."""
        rate = self.pacer.max_rate
        size = self.provider.max_batch if not rate else max(1, min(self.provider.max_batch, int(rate)))
        return size if self.limit is None else min(size, self.limit - self.handed)

    def _stopping(self) -> bool:
        return self.failure is not None or self.outage is not None or bool(self.report.stopped) or self.exhausted

    def _claim(self, want: int) -> list[Claimed]:
        """The next batch, after the rate limit and pauses; [] when stopped, away, or only skips came back."""
        try:
            if not self.pacer.admit(want, self.ledger.has_pending):
                self.report.stopped = self.beat.why_stopped()
                return []
            self.claims += 1
            claimed, skipped = self.ledger.claim(self.worker, self.claims, want, self.lease)
        except LeaseLost:
            self.beat.lost.set()
            self.report.stopped = self.beat.why_stopped()
            return []
        except StoreUnavailable as exc:
            self.outage = exc
            return []
        self.report.skipped_reasons.update(skipped)
        self.report.this_run[SKIPPED] += sum(skipped.values())
        if not claimed:
            self.exhausted = not skipped
        return claimed

    def _hand(self, claimed: list[Claimed]) -> None:
        recipients = self.mailing.recipients(claimed)
        future = self.pool.submit(self.provider.send, self.mailing.envelope, recipients, self.pacer)
        future.add_done_callback(functools.partial(_returned, self.finished, self.claims, recipients))
        self.in_flight += 1
        self.handed += len(recipients)

    def _record_returned(self) -> None:
        """Record every batch that has come back, without waiting."""
        try:
            while True:
                self._record(self.finished.get_nowait())
        except queue.Empty:
            pass

    def _record(self, item: _Returned) -> None:
        self.in_flight -= 1
        claim, recipients, future = item
        try:
            results = future.result()
        except ProviderError as exc:
            results = list(exc.partial)
            self.failure = self.failure or exc
        self.report.this_run.update(r.status for r in results)
        if self.outage is None:
            try:
                _record(self.ledger, self.worker, claim, recipients, results)
            except StoreUnavailable as exc:
                self.outage = exc
        if self.outage is not None:  # held, to be written when the store is back
            self.unrecorded.append((claim, recipients, results))
        if self.progress:
            self.progress(sum(self.report.this_run.values()), self.total)

    def _finish(self, started: float) -> None:
        """Interrupted or not: every batch with the provider finishes and is recorded, held results are
        written if the store is back, and the worker retires."""
        report = self.report
        while self.in_flight:
            self._record(self.finished.get())
        if self.pacer.stopped and not report.stopped:  # the stop came while the last batches were out
            report.stopped = self.beat.why_stopped()
        self.pool.shutdown(wait=True)
        self.beat.stop()
        report.duration = time.monotonic() - started
        try:
            while self.unrecorded:  # the store is back (or one last try)
                _record(self.ledger, self.worker, *self.unrecorded[0])
                self.unrecorded.pop(0)
            self.ledger.retire(self.worker, report.this_run[SENT], release=not self.unrecorded)
            self.ledger.recover(self.lease, sweep=False)  # rows of workers that died meanwhile become unknown
            report.counts = self.ledger.counts()
            report.problems = self.ledger.problems()
            self.ledger.finish_if_done(report.counts)
        except StoreUnavailable as exc:
            self.outage = self.outage or exc
        if self.outage is not None and not report.stopped:  # it came back in time to record everything
            report.stopped = f"stopped claiming while the store was away ({self.outage})"


def _wait_for_others(ledger: Ledger, worker: int, lease: float, pacer: Pacer) -> str:
    """Nothing is left to claim: wait while other workers finish the rows they hold, so that the send
    ends in a final state. A dead one's rows become unknown once its lease runs out; a live one is
    waited for two leases at most. Returns why this run stopped early, or ""."""
    deadline = time.monotonic() + 2 * lease
    while ledger.held_elsewhere(worker):
        ledger.recover(lease, sweep=False)
        if time.monotonic() > deadline:
            return ("rows are still held by another worker that is alive; it records them: `status` shows "
                    "them, and a later run finishes the send")
        if not pacer.sleep(0.25):
            return ""  # stopped: said by the caller
    return ""


def _gave_up(outage: StoreUnavailable, unrecorded: list[_Unrecorded], pending: int) -> StoreUnavailable:
    """The one line for a send whose store stayed away: what the provider did that could not be written."""
    results = [r for _claim, _recipients, batch in unrecorded for r in batch]
    if not results:
        return StoreUnavailable(f"{outage}; about {max(pending, 0):,} rows were not handed over and stay pending")
    accepted = sum(r.status == SENT for r in results)
    return StoreUnavailable(
        f"{outage}; the provider's answers for {len(results):,} recipients ({accepted:,} accepted) could not be "
        f"recorded: those rows stay in flight and are reported unknown by the next send, and about "
        f"{max(pending, 0):,} rows were not handed over and stay pending")


def _returned(finished: queue.Queue[_Returned], claim: int, recipients: list[Recipient],
              future: Future[list[Result]]) -> None:
    """A batch came back from the provider (its thread): hand it to the dispatcher to record."""
    finished.put((claim, recipients, future))


HOLD = 0.75  # the share of the lease after the last renewal within which a worker still sends


class _Heartbeat:
    """Renews a worker's lease from its own thread, so long waits never let it lapse.

    Each beat also turns the rows of workers that died into unknown. The dispatcher and the
    provider's threads send only while `holds()`: the last renewal is recent enough that no other
    worker can have found the lease expired, which also stops a process that was suspended
    (SIGSTOP) or cut off from the database before it sends anything more. A failed beat is tried
    again a second later; when the lease is found taken, `lost` is set.
    """

    def __init__(self, ledger: Ledger, worker: int, lease: float, report: SendReport) -> None:
        self.ledger, self.worker, self.lease, self.report = ledger, worker, lease, report
        self.lost = threading.Event()
        self.renewed = time.monotonic()
        self.error = ""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def holds(self) -> bool:
        return not self.lost.is_set() and time.monotonic() - self.renewed < HOLD * self.lease

    def why_stopped(self) -> str:
        """What a stop of the dispatcher is reported as: a lease lost or not kept, or the caller's stop."""
        if self.lost.is_set():
            return ("another worker found this one's lease expired and took its rows; stopped before "
                    "sending more")
        if not self.holds():
            return (f"this worker could not renew its lease for {time.monotonic() - self.renewed:.0f} s "
                    f"({self.error or 'the process was suspended or starved'}); stopped before sending more")
        return "stopped on request"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        interval = max(0.5, self.lease / 4)
        wait = interval
        while not self._done.wait(wait):
            began = time.monotonic()
            try:
                if not self.ledger.heartbeat(self.worker, self.report.this_run[SENT]):
                    self.lost.set()
                    return
                self.renewed, self.error, wait = began, "", interval
                self.ledger.recover(self.lease, sweep=False)
            except Exception as exc:  # noqa: BLE001 - the dispatcher stops on its own once the lease is not kept
                self.error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                wait = min(interval, 1.0)


def _record(ledger: Ledger, worker: int, claim: int, recipients: list[Recipient], results: list[Result]) -> None:
    """Record what the provider did with one batch; recipients it did not take go back to pending."""
    keys = [r.key for r in recipients]
    ledger.mark(worker, claim, [r[:5] for r in results], keys)  # (key, status, message_id, error, retry_in)
    if len(results) < len(keys):
        handled = {r.key for r in results}
        ledger.release(worker, [key for key in keys if key not in handled])
    inactive = [r for r in results if r.inactive]  # the provider will never deliver to them: nor will a later send
    if inactive:
        emails = {r.key: r.email for r in recipients}
        for result in inactive:
            suppress = functools.partial(ledger.store.suppress, emails[result.key],
                                         f"inactive at the provider ({result.error})", "send")
            ledger.store.patiently(suppress)


def send_test_copy(store: Store, mailing: Mailing, provider: Provider, address: str) -> Result:
    """Send one copy marked [TEST] with that subscriber's values (or sample ones); not in the ledger."""
    found = store.find(address)
    if found is not None:
        claimed = Claimed(found.id, found.email, found.name, json.dumps(found.attributes))
    else:
        from .addresses import normalize

        claimed = Claimed(0, normalize(address).email, placeholders.SAMPLE_VALUES["name"])
    envelope = replace(mailing.envelope, subject_prefix=TEST_PREFIX)
    recipient = mailing.recipient(claimed)
    recipient = recipient._replace(custom_args={**recipient.custom_args, "test": "1"})
    results = provider.send(envelope, [recipient])
    return results[0] if results else Result(recipient.key, "unknown", error="not attempted")


def send_confirmation(config: Config, templates: Templates, provider: Provider, *, subscriber_id: int, email: str,
                      name: str, list_name: str) -> Result:
    """Mail a double opt-in request with a signed, expiring confirmation link."""
    import datetime as dt

    from .render import mjml_to_html, render_template

    base_url = config.require_base_url()
    token = tokens.make_confirm(config.secret(), subscriber_id, list_name, config.web.confirm_ttl,
                                tag=tokens.address_tag(email))
    declared = config.list(list_name)
    context = {"newsletter": config.newsletter, "list": declared, "name": name, "email": email,
               "confirm_url": f"{base_url}/confirm/{token}", "hours": config.web.confirm_ttl // 3600}
    html = mjml_to_html(render_template(templates, "confirm.mjml", context), str(templates.folder / "confirm.mjml"))
    text = render_template(templates, "confirm.txt", context)
    rendered = Rendered(slug="confirmation", date=dt.date.today(), subject=f"Please confirm: {declared.title}",
                        preheader="One click to confirm your subscription.", html=html, text=text,
                        size=len(html.encode()))
    host = urlsplit(base_url).hostname or "localhost"
    envelope = Envelope(rendered=rendered, from_email=config.newsletter.from_email,
                        from_name=config.newsletter.from_name, reply_to=config.newsletter.reply_to,
                        list_id=f"{declared.title} <{list_name}.{host}>", category="confirmation")
    recipient = Recipient(subscriber_id, email, name, {}, "", {"list": list_name, "subscriber": str(subscriber_id)})
    results = provider.send(envelope, [recipient])
    return results[0] if results else Result(subscriber_id, "unknown", error="not attempted")


@dataclass
class DryRunReport:
    issue: str
    list_name: str
    recipients: int
    batches: int
    batch_size: int
    already_sent: int
    skipped_reasons: Counter[str]
    html_bytes: int
    text_bytes: int
    warnings: list[str]
    compatibility: compat.Report | None = None
    written: list[Path] = field(default_factory=list)


def dry_run(store: Store, mailing: Mailing, provider: Provider, *, out_dir: Path | None = None,
            limit: int = 3, segment: str = "") -> DryRunReport:
    """Everything a send would do up to the provider call, changing nothing in the store.

    With `out_dir`, the provider's preview files (what it would hand over) are written there.
    """
    provider.check(mailing.envelope)  # what the real send would refuse, the dry run refuses too
    slug, list_name = mailing.rendered.slug, mailing.list_name
    batch_size = provider.max_batch
    ledger = Ledger(store, slug, list_name, create=False, segment=audience(segment))
    preview = ledger.preview(max(limit, batch_size) if out_dir else 0)
    recipients, already, skipped = ledger.forecast()
    report = DryRunReport(
        issue=slug, list_name=list_name, recipients=recipients,
        batches=math.ceil(recipients / batch_size) if recipients else 0, batch_size=batch_size,
        already_sent=already, skipped_reasons=skipped, html_bytes=mailing.rendered.size,
        text_bytes=len(mailing.rendered.text.encode()), warnings=[*mailing.rendered.warnings, *mailing.warnings],
        compatibility=mailing.rendered.compatibility,
    )
    if out_dir is not None:
        for name, data in provider.preview(mailing.envelope, mailing.recipients(preview), limit):
            path = out_dir / name
            atomic_write(path, data)
            report.written.append(path)
    return report
