"""Delivery events reported by providers, in one shape whatever the provider.

Each event is stored once (a replay of the same event changes nothing), linked to the ledger
row of its issue and subscriber, and acted on: bounces and spam complaints suppress the address,
unsubscribes end the membership.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import addresses, consent
from .errors import InputError
from .ledger import settle_unknown
from .schema import events, lists, subscribers
from .sql import insert_new, now
from .store import Store
from .webhooks.base import KINDS, Receiver, TrackingEvent

BOUNCE, COMPLAINT, UNSUBSCRIBE = "bounced", "complained", "unsubscribed"

def _list_id(conn: Connection, list_name: str) -> int | None:
    """The list an event names; None (every list) when it names none. An unknown list matches nothing."""
    if not list_name:
        return None
    return int(conn.execute(sa.select(lists.c.id).where(lists.c.name == list_name)).scalar() or 0)


def apply(store: Store, batch: Iterable[TrackingEvent], source: str, conn: Connection | None = None) -> Counter[str]:
    """Store and act on events, in `conn`'s transaction or a write of their own; returns counts by kind,
    with replays under "duplicate"."""
    if conn is None:
        with store.write() as own:
            return _apply(store, own, batch, source)
    return _apply(store, conn, batch, source)


def _apply(store: Store, conn: Connection, batch: Iterable[TrackingEvent], source: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for event in batch:
        if event.kind not in KINDS:
            counts["ignored"] += 1
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
        if not insert_new(conn, events, {  # a replay, perhaps one arriving while the first is being stored
            "event_key": event.key, "kind": event.kind, "email": address.email, "issue": event.issue or None,
            "list_name": event.list_name or None, "subscriber_id": subscriber_id,
            "message_id": event.message_id or None, "reason": event.reason or None, "occurred_at": event.timestamp,
            "received_at": now(), "machine": event.machine,
        }):
            counts["duplicate"] += 1
            continue
        counts[event.kind] += 1
        if event.issue and subscriber_id is not None:
            settle_unknown(conn, event.issue, subscriber_id, event.kind, source=source, at=event.timestamp,
                           message_id=event.message_id, reason=event.reason)
        if event.kind in (BOUNCE, COMPLAINT):
            if subscriber_id is not None:
                action = consent.BOUNCE if event.kind == BOUNCE else consent.COMPLAINT
                store.apply_to_memberships(conn, subscriber_id, action, source, _list_id(conn, event.list_name))
            store.suppress(address.email, f"{event.kind}: {event.reason}" if event.reason else event.kind,
                           source, conn)
        elif event.kind == UNSUBSCRIBE and subscriber_id is not None:
            store.apply_to_memberships(conn, subscriber_id, consent.UNSUBSCRIBE, source,
                                       _list_id(conn, event.list_name))
    return counts


def receive(store: Store, receiver: Receiver, body: bytes, headers: Mapping[str, str], now: float) -> tuple[
        int, Counter[str]]:
    """One webhook call: verified before anything is read as events, then parsed and applied.
    Returns (events received, counts by kind). WebhookError for a wrong signature or time;
    InputError for a body that is not events."""
    receiver.verify(body, headers, now)
    try:
        parsed = receiver.parse(body)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return len(parsed), apply(store, parsed, f"{receiver.name} webhook")


def issue_counts(store: Store, issue: str) -> dict[str, int]:
    """Per kind: how many distinct recipients of `issue` had such an event."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.kind, sa.func.count(sa.distinct(events.c.email)))
            .where(events.c.issue == issue).group_by(events.c.kind)
        ).all()
    found: dict[str, int] = dict(rows)
    return {kind: found.get(kind, 0) for kind in KINDS}
