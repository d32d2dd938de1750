"""Every status the program stores or reports, as StrEnums: one home, and each equal to its text.

A member's status on a list, a ledger row's state, a sending worker's state, and the kinds of
provider event. Being `str`, they are what the database holds and what the faces print.
"""

from __future__ import annotations

from enum import StrEnum


class Membership(StrEnum):
    """A member's status on a list, as stored (a StrEnum: equal to its text)."""

    UNCONFIRMED = "unconfirmed"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class Delivery(StrEnum):
    """The state of one (issue, subscriber) row of the ledger (a StrEnum: equal to its text)."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"


class WorkerState(StrEnum):
    """A sending process's state: running while its lease holds, then done or lost."""

    RUNNING = "running"
    DONE = "done"
    LOST = "lost"


class EventKind(StrEnum):
    """The kinds of delivery event every provider's events are normalised to (a StrEnum: equal to its text)."""

    PROCESSED = "processed"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    BLOCKED = "blocked"
    DROPPED = "dropped"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    OPENED = "opened"
    CLICKED = "clicked"


class BounceClass(StrEnum):
    """What a message that came back to the bounce address is, for the consent rules (a StrEnum)."""

    HARD = "hard"  # the address or its domain does not exist, or the mailbox is disabled: suppress
    SOFT = "soft"  # for now (full, delayed, unclear): counted, suppressed after [bounces] soft_limit
    COMPLAINT = "complaint"  # a feedback-loop report: suppress and leave every list
    AUTO_REPLY = "auto_reply"  # out of office, vacation, challenge-response: ignored
    SENDER = "sender"  # refused for the sender's own setup (DMARC, authentication, a blocklisted IP): never suppresses
    UNKNOWN = "unknown"  # not understood: kept for a person to read
