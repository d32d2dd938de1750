"""Provider events in one shape, whatever the provider (after django-anymail's tracking events)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

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
    machine: bool = False  # an open or click the provider says a machine made (a privacy proxy, a scanner)

    @property
    def key(self) -> str:
        return self.event_id or f"{self.message_id}|{self.kind}|{self.timestamp.isoformat()}|{self.email.lower()}"


def received() -> dt.datetime:
    """Now, naive UTC: the time of an event whose own time cannot be read."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def epoch(value: object) -> dt.datetime:
    """A provider's Unix time as naive UTC; the time of receipt when it is not one."""
    try:
        return dt.datetime.fromtimestamp(float(str(value)), dt.UTC).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError):
        return received()


def json_object(value: object) -> dict[str, Any]:
    """`value` when the provider sent a JSON object there, else an empty one."""
    return value if isinstance(value, dict) else {}


def subscriber_id(value: object) -> int | None:
    """The subscriber id our custom arguments carried back, when it is one."""
    text = str(value if value is not None else "")
    return int(text) if text.isdigit() else None


class Receiver(Protocol):
    """One provider's event webhook, mounted at `/webhooks/{name}` (after django-anymail's tracking
    webhooks): the call is verified before anything of its body is read as events."""

    name: str

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        """Raise WebhookError unless the provider signed this body recently enough."""
        ...

    def parse(self, body: bytes) -> list[TrackingEvent]:
        """The body's events, normalised; ValueError for a body that is not a batch of events."""
        ...

