"""Provider events in one shape, whatever the provider (after django-anymail's tracking events)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..statuses import EventKind

KINDS = tuple(EventKind)


@dataclass(frozen=True)
class TrackingEvent:
    """One provider event, normalised."""

    kind: str
    email: str
    timestamp: dt.datetime  # UTC, naive
    event_id: str = ""
    message_id: str = ""
    issue: str = ""
    list_name: str = ""
    subscriber_id: int | None = None
    reason: str = ""

    @property
    def key(self) -> str:
        return self.event_id or f"{self.message_id}|{self.kind}|{self.timestamp.isoformat()}|{self.email.lower()}"
