"""Incidents for the operator: each said once, however many runs and processes see it.

An incident is a row of `alerts` under a key naming what went wrong ("send-failures:ISSUE:LIST").
`open_incident` inserts it, or opens it again if it was over: only the one call that did so says it
is new. Each channel (mail, webhook) is taken by one process before it is tried, and handed back if
the try fails, so an alert is delivered once per channel and a later run retries what failed.
The checks read what is wrong from the store: sends that stopped moving, a wave of sender-side
refusals.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from .schema import PENDING, alerts, deliveries, events, lists, sends
from .sql import insert_new, now
from .statuses import EventKind
from .store import Store

Channel = Literal["mailed_at", "posted_at"]
CHANNELS: tuple[Channel, ...] = ("mailed_at", "posted_at")


@dataclass(frozen=True)
class Alert:
    key: str
    title: str
    text: str


def open_incident(store: Store, alert: Alert) -> bool:
    """True when this call opened the incident (new, or back after it was over): the caller alerts."""
    at = now()
    with store.write() as conn:
        if insert_new(conn, alerts, {"key": alert.key, "title": alert.title[:300], "text": alert.text,
                                     "opened_at": at}):
            return True
        return bool(conn.execute(alerts.update().where(alerts.c.key == alert.key, alerts.c.resolved_at.is_not(None))
                                 .values(title=alert.title[:300], text=alert.text, opened_at=at, resolved_at=None,
                                         mailed_at=None, posted_at=None)).rowcount)


def resolve(store: Store, key: str) -> bool:
    """The incident is over (if it was open): the next time it happens is a new one."""
    with store.write() as conn:
        return bool(conn.execute(alerts.update().where(alerts.c.key == key, alerts.c.resolved_at.is_(None))
                                 .values(resolved_at=now())).rowcount)


def resolve_all(store: Store, prefix: str, keep: set[str]) -> None:
    """Every open incident whose key starts with `prefix` is over, but those in `keep`."""
    with store.write() as conn:
        conn.execute(alerts.update().where(alerts.c.key.startswith(prefix, autoescape=True),
                                           alerts.c.resolved_at.is_(None), alerts.c.key.not_in(keep))
                     .values(resolved_at=now()))


def take(store: Store, channel: Channel) -> list[Alert]:
    """The open incidents not yet delivered on `channel`, each taken by this process alone."""
    with store.write() as conn:
        waiting = conn.execute(sa.select(alerts.c.key, alerts.c.title, alerts.c.text)
                               .where(alerts.c.resolved_at.is_(None), alerts.c[channel].is_(None))
                               .order_by(alerts.c.opened_at)).all()
        taken = []
        for key, title, text in waiting:
            if conn.execute(alerts.update().where(alerts.c.key == key, alerts.c[channel].is_(None))
                            .values({channel: now()})).rowcount:
                taken.append(Alert(key, title, text))
        return taken


def give_back(store: Store, channel: Channel, alert: Alert) -> None:
    """Delivering it on `channel` failed: a later run tries again."""
    with store.write() as conn:
        conn.execute(alerts.update().where(alerts.c.key == alert.key).values({channel: None}))


def open_keys(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(alerts.c.key).where(alerts.c.resolved_at.is_(None))
                                 .order_by(alerts.c.opened_at)).scalars())


def stalled(store: Store, minutes: int) -> list[tuple[str, str, int, dt.datetime]]:
    """(issue, list, rows pending, last progress) of each issue's send with rows that may go now and
    nothing done for `minutes`. A welcome mail's rows waiting for their day do not count."""
    last, waited = sa.func.max(deliveries.c.updated_at), sa.func.max(deliveries.c.retry_after)
    due = sa.func.sum(sa.case((sa.and_(deliveries.c.state == PENDING, sa.or_(
        deliveries.c.retry_after.is_(None), deliveries.c.retry_after <= now())), 1), else_=0))
    query = (sa.select(sends.c.issue, lists.c.name, due, last, waited)
             .join(lists, lists.c.id == sends.c.list_id)
             .join(deliveries, sa.and_(deliveries.c.issue == sends.c.issue, deliveries.c.list_id == sends.c.list_id))
             .where(sends.c.finished_at.is_(None))
             .group_by(sends.c.issue, lists.c.name))
    horizon = now() - dt.timedelta(minutes=minutes)
    with store.engine.connect() as conn:
        found = []
        for issue, name, pending, *times in conn.execute(query):
            # The last change, or the time a row waited for (a retry, a welcome mail's day) if later.
            moved = max((dt.datetime.fromisoformat(t) if isinstance(t, str) else t for t in times if t is not None),
                        default=None)
            if pending and moved is not None and moved <= horizon:
                found.append((str(issue), str(name), int(pending), moved))
        return found


def sender_refusals(store: Store, minutes: int) -> int:
    """Sender-side refusals (blocked: DMARC, authentication, a blocklist), by any route, in the last `minutes`."""
    since = now() - dt.timedelta(minutes=minutes)
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(events)
                                .where(events.c.kind == EventKind.BLOCKED, events.c.received_at >= since)).scalar()
                   or 0)
