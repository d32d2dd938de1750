"""Delivery events reported by providers, in one shape whatever the provider.

Each event is stored once (a replay of the same event changes nothing), linked to the ledger
row of its issue and subscriber, and acted on: bounces and spam complaints suppress the address,
unsubscribes end the membership.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import addresses
from .errors import InputError
from .providers.base import KINDS, TrackingEvent
from .store import (
    ACTIVE, BOUNCED, COMPLAINED, UNCONFIRMED, UNSUBSCRIBED, Store, lists, memberships, metadata, migration, now,
    subscribers, suppressions,
)

BOUNCE, COMPLAINT, UNSUBSCRIBE = "bounced", "complained", "unsubscribed"

events = sa.Table(
    "events", metadata,
    sa.Column("event_key", sa.String(200), primary_key=True),  # the provider's id, or message+kind+time
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("issue", sa.String(200), nullable=True),
    sa.Column("list_name", sa.String(100), nullable=True),
    sa.Column("subscriber_id", sa.Integer, nullable=True),
    sa.Column("message_id", sa.String(200), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("occurred_at", sa.DateTime, nullable=False),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Index("ix_events_issue_kind", "issue", "kind", "subscriber_id"),
)


@migration(3, "provider events")
def _v3(conn: Connection) -> None:
    metadata.create_all(conn, tables=[events])


def _set_status(conn: Connection, subscriber_id: int, list_name: str, status: str, source: str) -> None:
    query = memberships.update().where(memberships.c.subscriber_id == subscriber_id,
                                       memberships.c.status.in_([ACTIVE, UNCONFIRMED] if status == UNSUBSCRIBED
                                                                else [ACTIVE, UNCONFIRMED, UNSUBSCRIBED]))
    if list_name:
        query = query.where(memberships.c.list_id == sa.select(lists.c.id).where(lists.c.name == list_name)
                            .scalar_subquery())
    conn.execute(query.values(status=status, changed_at=now(), source=source))


def apply(store: Store, batch: Iterable[TrackingEvent], source: str) -> Counter[str]:
    """Store and act on events; returns counts by kind, with replays under "duplicate"."""
    counts: Counter[str] = Counter()
    with store.write() as conn:
        for event in batch:
            if event.kind not in KINDS:
                counts["ignored"] += 1
                continue
            if conn.execute(sa.select(events.c.event_key).where(events.c.event_key == event.key)).first():
                counts["duplicate"] += 1
                continue
            try:
                address = addresses.normalize(event.email)
            except InputError:
                counts["ignored"] += 1
                continue
            subscriber_id = event.subscriber_id
            found = conn.execute(sa.select(subscribers.c.id).where(subscribers.c.email_key == address.key)).scalar()
            if subscriber_id is None or found != subscriber_id:
                subscriber_id = found  # trust the address we store over an id in custom args
            conn.execute(events.insert().values(
                event_key=event.key, kind=event.kind, email=address.email, issue=event.issue or None,
                list_name=event.list_name or None, subscriber_id=subscriber_id, message_id=event.message_id or None,
                reason=event.reason or None, occurred_at=event.timestamp, received_at=now(),
            ))
            counts[event.kind] += 1
            if event.kind in (BOUNCE, COMPLAINT):
                if subscriber_id is not None:
                    _set_status(conn, subscriber_id, event.list_name, BOUNCED if event.kind == BOUNCE else COMPLAINED,
                                source)
                if not store.is_suppressed(address.key, conn):
                    conn.execute(suppressions.insert().values(
                        email_hash=address.hash, email_key=address.key,
                        reason=f"{event.kind}: {event.reason}"[:300] if event.reason else event.kind,
                        source=source, created_at=now()))
            elif event.kind == UNSUBSCRIBE and subscriber_id is not None:
                _set_status(conn, subscriber_id, event.list_name, UNSUBSCRIBED, source)
    return counts


def issue_counts(store: Store, issue: str) -> dict[str, int]:
    """Per kind: how many distinct recipients of `issue` had such an event."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.kind, sa.func.count(sa.distinct(events.c.email)))
            .where(events.c.issue == issue).group_by(events.c.kind)
        ).all()
    found = dict(rows)
    return {kind: found.get(kind, 0) for kind in KINDS}
