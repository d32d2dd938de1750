"""Every table of the store, and the ordered migrations that build and upgrade them.

One module holds the whole schema so that the store, the ledger and the event log can share
tables without importing each other. Migrations are listed explicitly in `MIGRATIONS`, in
order; a database records the newest one it has run in `schema_version`.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .errors import StoreError
from .statuses import Delivery, WorkerState

metadata = sa.MetaData()

schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))

lists = sa.Table(
    "lists", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

subscribers = sa.Table(
    "subscribers", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("email_key", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(300), nullable=False, default=""),
    sa.Column("attributes", sa.Text, nullable=False, default="{}"),  # JSON object of strings
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

memberships = sa.Table(
    "memberships", metadata,
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id"), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("changed_at", sa.DateTime, nullable=False),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("left_at", sa.DateTime, nullable=True),  # when the person last left this list; cleared by confirming
    sa.Index("ix_memberships_list_status", "list_id", "status", "subscriber_id"),
)

# Every change of a membership or a suppression: when, from what to what, by which source, why.
history = sa.Table(
    "history", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("subscriber_id", sa.Integer, nullable=False),
    sa.Column("list_id", sa.Integer, nullable=True),  # None: about the address (suppressed, unsuppressed)
    sa.Column("from_status", sa.String(20), nullable=True),
    sa.Column("to_status", sa.String(20), nullable=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("reason", sa.String(300), nullable=True),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("issue", sa.String(200), nullable=True),  # the issue whose unsubscribe link made the change
    sa.Index("ix_history_subscriber", "subscriber_id", "id"),
    sqlite_autoincrement=True,
)

suppressions = sa.Table(
    "suppressions", metadata,
    sa.Column("email_hash", sa.String(64), primary_key=True),
    sa.Column("email_key", sa.String(320), nullable=True, unique=True),  # NULL once the person is erased
    sa.Column("reason", sa.String(300), nullable=False),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

sends = sa.Table(
    "sends", metadata,
    sa.Column("issue", sa.String(200), primary_key=True),
    sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id"), primary_key=True),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("recipients", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime, nullable=True),
    sa.Column("events", sa.Boolean, nullable=True),  # whether its provider reports delivery events
    sa.Column("segment", sa.Text, nullable=True),  # the segments whose members it was fixed to ("; " between)
    # None: an issue, its recipients fixed when it starts; WELCOME: a welcome mail, whose rows are
    # added as members join (`welcome.enrol`)
    sa.Column("kind", sa.String(20), nullable=True),
)
WELCOME = "welcome"

# A delivery's states: pending → in_flight → sent | failed | unknown | skipped (see `ledger`).
PENDING, IN_FLIGHT, SENT = Delivery.PENDING, Delivery.IN_FLIGHT, Delivery.SENT
FAILED, UNKNOWN, SKIPPED = Delivery.FAILED, Delivery.UNKNOWN, Delivery.SKIPPED
DELIVERY_STATES = tuple(Delivery)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("issue", sa.String(200), primary_key=True),
    sa.Column("subscriber_id", sa.Integer, primary_key=True),
    sa.Column("list_id", sa.Integer, sa.ForeignKey("lists.id"), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("message_id", sa.String(200), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("worker_id", sa.Integer, nullable=True),  # who holds it while in_flight
    sa.Column("claim", sa.Integer, nullable=True),  # which of that worker's claims
    sa.Column("retry_after", sa.DateTime, nullable=True),  # a deferred row waits until then
    # No index on state on purpose: every row changes state two or three times, and claims walk
    # the primary key in subscriber order from a cursor instead.
)

# Sending processes: each holds a lease on the rows it claims for as long as it heartbeats.
RUNNING, DONE, LOST = WorkerState.RUNNING, WorkerState.DONE, WorkerState.LOST
workers = sa.Table(
    "workers", metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # never reused (AUTOINCREMENT on SQLite)
    sa.Column("issue", sa.String(200), nullable=False),
    sa.Column("list_id", sa.Integer, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("sent", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    sa.Index("ix_workers_send", "issue", "list_id", "state"),
    sqlite_autoincrement=True,
)

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
    sa.Column("machine", sa.Boolean, nullable=True),  # made by a machine, as the provider says (opens, clicks)
    sa.Index("ix_events_issue_kind", "issue", "kind", "subscriber_id"),
    sa.Index("ix_events_subscriber_kind", "subscriber_id", "kind", "occurred_at"),  # a segment's engagement fields
)

# A subscriber's tags (lowercase words, see `fields.tags`), for segments.
tags = sa.Table(
    "tags", metadata,
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), primary_key=True),
    sa.Column("tag", sa.String(64), primary_key=True),
    sa.Column("tagged_at", sa.DateTime, nullable=False),
    sa.Index("ix_tags_tag", "tag", "subscriber_id"),
)

# Messages of the bounce mailbox already acted on: a message seen again (a crash before it was
# moved, POP3, which cannot move) changes nothing.
mailbox_messages = sa.Table(
    "mailbox_messages", metadata,
    sa.Column("digest", sa.String(64), primary_key=True),  # SHA-256 of the raw message
    sa.Column("mailbox", sa.String(300), nullable=False),
    sa.Column("message_key", sa.String(200), nullable=True),  # the POP3 UIDL (IMAP moves what it has read)
    sa.Column("outcome", sa.String(20), nullable=False),  # the message's BounceClass
    sa.Column("processed_at", sa.DateTime, nullable=False),
    sa.Index("ix_mailbox_messages_key", "mailbox", "message_key"),
)

# Incidents the operator was alerted to: one row per thing that went wrong (`alerts`), so that
# each is said once however many runs see it, and again only after it was over and came back.
alerts = sa.Table(
    "alerts", metadata,
    sa.Column("key", sa.String(300), primary_key=True),  # what went wrong, e.g. "send-failures:2026-12-07:weekly"
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("opened_at", sa.DateTime, nullable=False),
    sa.Column("resolved_at", sa.DateTime, nullable=True),  # over; it opens again (a new incident) if it comes back
    sa.Column("mailed_at", sa.DateTime, nullable=True),  # taken by the process that mails it; NULL again on failure
    sa.Column("posted_at", sa.DateTime, nullable=True),  # the same for the webhook
)


def _leases(conn: Connection) -> None:
    """Workers with leases; deliveries remember their worker, claim and retry time."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("deliveries")}
    for column in ("worker_id", "claim", "retry_after"):
        if column not in have:  # a store made before version 4
            kind = deliveries.c[column].type.compile(conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE deliveries ADD COLUMN {column} {kind}"))
    metadata.create_all(conn, tables=[workers])


def _history(conn: Connection) -> None:
    """The history of consent; memberships remember when the person left."""
    if "left_at" not in {c["name"] for c in sa.inspect(conn).get_columns("memberships")}:
        conn.execute(sa.text(f"ALTER TABLE memberships ADD COLUMN left_at {sa.DateTime().compile(conn.dialect)}"))
        conn.execute(memberships.update().where(memberships.c.status.in_(["unsubscribed", "bounced", "complained"]))
                     .values(left_at=memberships.c.changed_at))
    metadata.create_all(conn, tables=[history])


def _send_events(conn: Connection) -> None:
    if "events" not in {c["name"] for c in sa.inspect(conn).get_columns("sends")}:
        conn.execute(sa.text(f"ALTER TABLE sends ADD COLUMN events {sa.Boolean().compile(conn.dialect)}"))


def _history_issue(conn: Connection) -> None:
    """History lines say which issue's link made a change, in a column (it was a reason "issue SLUG")."""
    if "issue" not in {c["name"] for c in sa.inspect(conn).get_columns("history")}:
        conn.execute(sa.text(f"ALTER TABLE history ADD COLUMN issue {sa.String(200).compile(conn.dialect)}"))
    conn.execute(history.update().where(history.c.issue.is_(None), history.c.to_status == "unsubscribed",
                                        history.c.reason.like("issue %"))
                 .values(issue=sa.func.substr(history.c.reason, 7), reason=None))


def _event_machine(conn: Connection) -> None:
    if "machine" not in {c["name"] for c in sa.inspect(conn).get_columns("events")}:
        conn.execute(sa.text(f"ALTER TABLE events ADD COLUMN machine {sa.Boolean().compile(conn.dialect)}"))


def _send_segment(conn: Connection) -> None:
    if "segment" not in {c["name"] for c in sa.inspect(conn).get_columns("sends")}:
        conn.execute(sa.text(f"ALTER TABLE sends ADD COLUMN segment {sa.Text().compile(conn.dialect)}"))


def _send_kind(conn: Connection) -> None:
    if "kind" not in {c["name"] for c in sa.inspect(conn).get_columns("sends")}:
        conn.execute(sa.text(f"ALTER TABLE sends ADD COLUMN kind {sa.String(20).compile(conn.dialect)}"))


def _event_index(conn: Connection) -> None:
    index = next(i for i in events.indexes if i.name == "ix_events_subscriber_kind")
    if index.name not in {i["name"] for i in sa.inspect(conn).get_indexes("events")}:
        index.create(conn)


def _creates(*tables: sa.Table) -> Callable[[Connection], None]:
    def create(conn: Connection) -> None:
        metadata.create_all(conn, tables=list(tables))

    return create


# (version, what it does, the step): run in order, each once, inside one transaction.
MIGRATIONS: tuple[tuple[int, str, Callable[[Connection], None]], ...] = (
    (1, "lists, subscribers, memberships, suppressions", _creates(lists, subscribers, memberships, suppressions)),
    (2, "delivery ledger: sends and deliveries", _creates(sends, deliveries)),
    (3, "provider events", _creates(events)),
    (4, "sending workers and leases", _leases),
    (5, "consent history; when a member left", _history),
    (6, "sends remember whether their provider reports events", _send_events),
    (7, "history lines name the issue whose link made the change", _history_issue),
    (8, "events say whether a machine made them (opens by privacy proxies and scanners)", _event_machine),
    (9, "messages of the bounce mailbox already acted on", _creates(mailbox_messages)),
    (10, "subscribers' tags", _creates(tags)),
    (11, "sends remember the segments they were fixed to", _send_segment),
    (12, "events by subscriber and kind, for segments' engagement fields", _event_index),
    (13, "sends say whether they are welcome mails, whose rows are added as members join", _send_kind),
    (14, "incidents the operator was alerted to", _creates(alerts)),
)


# The transaction-level advisory lock that upgrades on PostgreSQL take one after another.
UPGRADE_LOCK = int.from_bytes(b"nl-schem", "big", signed=True)


def upgrade(engine: Engine) -> int:
    """Bring the schema to the newest version; returns the version."""
    with engine.execution_options(write=True).begin() as conn:  # SQLite: BEGIN IMMEDIATE, one writer
        if conn.dialect.name == "postgresql":  # programs started together on a new database: one creates it
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(UPGRADE_LOCK)))
        schema_version.create(conn, checkfirst=True)
        current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
        newest = MIGRATIONS[-1][0]
        if current > newest:
            raise StoreError(
                f"the store's schema is version {current}, newer than this program knows ({newest}); upgrade newsletter"
            )
        for version, _description, step in MIGRATIONS:
            if version > current:
                step(conn)
                conn.execute(schema_version.delete())
                conn.execute(schema_version.insert().values(version=version))
                current = version
    return current
