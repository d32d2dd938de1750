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

from . import addresses, consent
from .errors import InputError
from .schema import events, lists, memberships, subscribers
from .store import Store, now
from .webhooks.base import KINDS, TrackingEvent

BOUNCE, COMPLAINT, UNSUBSCRIBE = "bounced", "complained", "unsubscribed"

def _change(conn: Connection, subscriber_id: int, list_name: str, action: str, to: str, source: str) -> None:
    """Apply a consent action to the member's list (every list when the event names none)."""
    query = memberships.update().where(memberships.c.subscriber_id == subscriber_id,
                                       memberships.c.status.in_(consent.changes_from(action, to)))
    if list_name:
        query = query.where(memberships.c.list_id == sa.select(lists.c.id).where(lists.c.name == list_name)
                            .scalar_subquery())
    conn.execute(query.values(status=to, changed_at=now(), source=source))


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
                    if event.kind == BOUNCE:
                        _change(conn, subscriber_id, event.list_name, consent.BOUNCE, consent.BOUNCED, source)
                    else:
                        _change(conn, subscriber_id, event.list_name, consent.COMPLAINT, consent.COMPLAINED, source)
                store.suppress(address.email, f"{event.kind}: {event.reason}" if event.reason else event.kind,
                               source, conn)
            elif event.kind == UNSUBSCRIBE and subscriber_id is not None:
                _change(conn, subscriber_id, event.list_name, consent.UNSUBSCRIBE, consent.UNSUBSCRIBED, source)
    return counts


def issue_counts(store: Store, issue: str) -> dict[str, int]:
    """Per kind: how many distinct recipients of `issue` had such an event."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.kind, sa.func.count(sa.distinct(events.c.email)))
            .where(events.c.issue == issue).group_by(events.c.kind)
        ).all()
    found: dict[str, int] = dict(rows)
    return {kind: found.get(kind, 0) for kind in KINDS}
