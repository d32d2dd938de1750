"""The bounce loop: each message of the bounce mailbox read once, acted on, recorded, then put away.

A message's findings become events of the one event type and go through `events.apply`, so a
hard bounce or a complaint suppresses exactly as a provider's webhook would, and a sender-side
refusal is recorded (`blocked`) without suppressing anyone. A soft bounce is counted; the
`[bounces] soft_limit`-th within `soft_window_days` suppresses. The delivery a report is about is
named by our VERP token first (it survives a mangled report), then by the headers of the copy it
returned, then by the address the report gives.

Order makes a crash harmless: a message's events (each keyed by its digest) and the record that it
was read are one transaction, and the message is moved after it. A message is never
deleted, and one no rule understood goes to the folder a person reads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import addresses, bounces, events
from .config import BouncesSettings
from .mailbox import Mailbox
from .schema import deliveries, events as event_rows, lists, mailbox_messages, subscribers
from .sql import now
from .statuses import BounceClass, EventKind
from .store import Store
from .tokens import ReturnPath, issue_digest
from .webhooks.base import TrackingEvent

SOURCE = "bounce mailbox"
_KINDS: Mapping[str, str] = MappingProxyType({
    BounceClass.HARD: EventKind.BOUNCED, BounceClass.COMPLAINT: EventKind.COMPLAINED,
    BounceClass.SOFT: EventKind.DEFERRED, BounceClass.SENDER: EventKind.BLOCKED})


@dataclass
class FetchReport:
    """What one fetch did."""

    mailbox: str
    read: int = 0
    again: int = 0  # messages read before (a crash before they were moved, or POP3): nothing changed
    classes: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0  # by hard bounces, complaints and the soft limit
    sender_side: list[tuple[str, str, str]] = field(default_factory=list)  # (address, status, server's words)

    @property
    def summary(self) -> str:
        """One line of what was read; "" when nothing was waiting."""
        if not (self.read or self.again):
            return ""
        classes = ", ".join(f"{kind} {count}" for kind, count in sorted(self.classes.items()))
        return (f"{self.mailbox}: read {self.read} ({classes or 'none new'}), suppressed {self.suppressed}"
                + (f", {self.again} read before" if self.again else ""))

    @property
    def warnings(self) -> list[str]:
        """One line per refusal for the sender's own setup: what the operator must fix."""
        return [f"mail to {address} was rejected because of the sender's setup ({status}): {words}"
                for address, status, words in self.sender_side]

    @property
    def line(self) -> str:
        """The summary, then the warnings (what the scheduler logs)."""
        return "\n".join(line for line in (self.summary, *self.warnings) if line)

    @property
    def exit_code(self) -> int:
        """1 when mail was refused for the sender's own setup (the operator must act), else 0."""
        return 1 if self.sender_side else 0


def fetch(store: Store, mailbox: Mailbox, settings: BouncesSettings, paths: ReturnPath | None) -> FetchReport:
    """Read every message waiting in `mailbox` once; see the module docstring."""
    report = FetchReport(mailbox.name)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(mailbox_messages.c.message_key).where(
            mailbox_messages.c.mailbox == mailbox.name, mailbox_messages.c.message_key.is_not(None))).scalars()
        seen = {str(key) for key in rows}
    done: dict[bool, list[str]] = {True: [], False: []}  # read and recorded, to move in one command per folder
    for key, raw in mailbox.fetch(mailbox.pending(seen)):
        recorded = key if mailbox.lasting_keys else None
        done[_one(store, mailbox.name, recorded, raw, settings, paths, report)].append(key)
        if len(done[True]) + len(done[False]) >= settings.mailbox.batch:
            _put_away(mailbox, done)
    _put_away(mailbox, done)
    return report


def _one(store: Store, name: str, key: str | None, raw: bytes, settings: BouncesSettings, paths: ReturnPath | None,
         report: FetchReport) -> bool:
    """Act on one message unless it was read before, and record it, in one transaction (the message is
    parsed before it, so the writer is held only for the writes); whether any rule understood it."""
    digest = hashlib.sha256(raw).hexdigest()
    with store.engine.connect() as conn:
        known = conn.execute(sa.select(mailbox_messages.c.outcome).where(mailbox_messages.c.digest == digest)).scalar()
    if known is not None:
        report.again += 1
        return bool(known != BounceClass.UNKNOWN)
    parsed = bounces.read(raw)
    report.read += 1
    report.classes[parsed.kind] += 1
    with store.write() as conn:
        _act(store, conn, parsed, digest, settings, paths, report)
        conn.execute(mailbox_messages.insert().values(
            digest=digest, mailbox=name, message_key=key,
            outcome=str(parsed.kind), processed_at=now()))
    return parsed.kind != BounceClass.UNKNOWN


def _put_away(mailbox: Mailbox, done: dict[bool, list[str]]) -> None:
    for understood, keys in done.items():
        mailbox.done(keys, understood)
        keys.clear()


def _act(store: Store, conn: Connection, parsed: bounces.Report, digest: str, settings: BouncesSettings,
         paths: ReturnPath | None, report: FetchReport) -> None:
    found = [_event(conn, parsed, finding, f"mailbox:{digest}:{index}", paths)
             for index, finding in enumerate(parsed.findings) if finding.kind in _KINDS]
    counts = events.apply(store, found, SOURCE, conn)
    report.suppressed += counts.get(EventKind.BOUNCED, 0) + counts.get(EventKind.COMPLAINED, 0)
    for event, finding in zip(found, (f for f in parsed.findings if f.kind in _KINDS), strict=True):
        if finding.kind == BounceClass.SENDER:
            report.sender_side.append((event.email, finding.status, finding.diagnostic))
        if finding.kind == BounceClass.SOFT and _soft_limit_reached(conn, event.email, settings):
            limit = TrackingEvent(kind=EventKind.BOUNCED, email=event.email, timestamp=event.timestamp,
                                  event_id=f"mailbox-soft:{digest}:{event.email.lower()}", issue=event.issue,
                                  list_name=event.list_name, subscriber_id=event.subscriber_id,
                                  reason=f"{settings.soft_limit} soft bounces in {settings.soft_window_days} days "
                                         f"(last: {finding.status} {finding.diagnostic})"[:300])
            report.suppressed += events.apply(store, [limit], SOURCE, conn).get(EventKind.BOUNCED, 0)


def _event(conn: Connection, parsed: bounces.Report, finding: bounces.Finding, key: str,
           paths: ReturnPath | None) -> TrackingEvent:
    """The finding as an event, linked to its delivery: by VERP, by the returned copy's headers, by address."""
    email, issue, list_name = finding.email, parsed.returned.get("issue", ""), parsed.returned.get("list", "")
    subscriber = int(parsed.returned["subscriber"]) if parsed.returned.get("subscriber", "").isdigit() else None
    verp = paths.find(parsed.headers) if paths is not None else None
    if verp is not None:
        subscriber, digest = verp
        address = conn.execute(sa.select(subscribers.c.email).where(subscribers.c.id == subscriber)).scalar()
        sent = conn.execute(sa.select(deliveries.c.issue, lists.c.name).join(lists, lists.c.id == deliveries.c.list_id)
                            .where(deliveries.c.subscriber_id == subscriber)).all()
        email = str(address or email)
        issue, list_name = next(((row.issue, row.name) for row in sent if issue_digest(row.issue) == digest),
                                (issue, list_name))
    return TrackingEvent(kind=_KINDS[finding.kind], email=email, timestamp=now(), event_id=key, issue=issue,
                         list_name=list_name, subscriber_id=subscriber,
                         reason=f"{finding.status} {finding.diagnostic}".strip()[:300])


def _soft_limit_reached(conn: Connection, email: str, settings: BouncesSettings) -> bool:
    since = now() - dt.timedelta(days=settings.soft_window_days)
    count = conn.execute(sa.select(sa.func.count()).select_from(event_rows).where(
        event_rows.c.email == addresses.normalize(email).email, event_rows.c.kind == EventKind.DEFERRED,
        event_rows.c.event_key.like("mailbox:%"), event_rows.c.occurred_at >= since)).scalar()
    return int(count or 0) >= settings.soft_limit
