"""Postmark's webhooks: one record per call, authenticated by the basic credentials in the webhook's URL.

The credentials are compared in constant time before the body is read. Records are normalised to
the one event shape; the message's Metadata (issue, list, subscriber), set when it was sent, links
each to its ledger row. A bounce that is the sender's doing (a DMARC policy, a blocked sender) or
only for now (soft, transient, DNS) never suppresses anyone: it is `blocked` or `deferred`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..config import PostmarkSettings
from ..errors import WebhookError
from ..statuses import EventKind
from .base import TrackingEvent, json_object, received, subscriber_id

# Bounce types (https://postmarkapp.com/developer/api/bounce-api#bounce-types) as event kinds.
_BOUNCES: Mapping[str, str] = MappingProxyType({
    "HardBounce": EventKind.BOUNCED, "BadEmailAddress": EventKind.BOUNCED, "Blocked": EventKind.BLOCKED,
    "SpamNotification": EventKind.BLOCKED, "DMARCPolicy": EventKind.BLOCKED, "SpamComplaint": EventKind.COMPLAINED,
    "ManuallyDeactivated": EventKind.DROPPED, "SoftBounce": EventKind.DEFERRED, "Transient": EventKind.DEFERRED,
    "DnsError": EventKind.DEFERRED, "AutoResponder": EventKind.DELIVERED, "Unsubscribe": EventKind.UNSUBSCRIBED,
})
_SUPPRESSION_REASONS: Mapping[str, str] = MappingProxyType({
    "HardBounce": EventKind.BOUNCED, "SpamComplaint": EventKind.COMPLAINED, "ManualSuppression": EventKind.UNSUBSCRIBED,
})
_TIMES = ("BouncedAt", "DeliveredAt", "ReceivedAt", "ChangedAt")


def _kind(record: Mapping[str, Any]) -> str | None:
    kind = record.get("RecordType")
    if kind in ("Bounce", "SpamComplaint"):
        return _BOUNCES.get(str(record.get("Type")), EventKind.BLOCKED if kind == "Bounce" else EventKind.COMPLAINED)
    if kind == "SubscriptionChange":
        return _SUPPRESSION_REASONS.get(str(record.get("SuppressionReason"))) if record.get("SuppressSending") else None
    return {"Delivery": EventKind.DELIVERED, "Open": EventKind.OPENED, "Click": EventKind.CLICKED}.get(str(kind))


def _time(record: Mapping[str, Any]) -> dt.datetime:
    for key in _TIMES:
        if record.get(key):
            try:
                stamp = dt.datetime.fromisoformat(str(record[key]).replace("Z", "+00:00"))
            except ValueError:
                break
            return (stamp.astimezone(dt.UTC) if stamp.tzinfo else stamp).replace(tzinfo=None)
    return received()


def parse_record(payload: bytes) -> list[TrackingEvent]:
    """One Postmark webhook record as a TrackingEvent (none for a kind that is not tracked)."""
    record = json.loads(payload)
    if not isinstance(record, dict):
        raise ValueError("the body is not a JSON object (Postmark posts one record per call)")
    kind = _kind(record)
    email = str(record.get("Email") or record.get("Recipient") or "")
    if kind is None or not email:
        return []
    meta = json_object(record.get("Metadata"))
    stamp = _time(record)
    reason = record.get("Details") or record.get("Description") or record.get("OriginalLink") or ""
    return [TrackingEvent(
        kind=kind, email=email, timestamp=stamp, event_id=f"postmark:{record['ID']}" if record.get("ID") else "",
        message_id=str(record.get("MessageID", "")), issue=str(meta.get("issue", "")),
        list_name=str(meta.get("list", "")), subscriber_id=subscriber_id(meta.get("subscriber")),
        reason=str(reason)[:300],
    )]


class PostmarkReceiver:
    """Postmark's webhooks, authenticated by `[postmark] webhook_username` and the password in the environment."""

    name = "postmark"

    def __init__(self, settings: PostmarkSettings) -> None:
        self.settings = settings

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        password = os.environ.get(self.settings.webhook_password_env, "")
        if not self.settings.webhook_username or not password:
            raise WebhookError(f"[postmark] webhook_username or ${self.settings.webhook_password_env} is not set: "
                               f"webhook calls are refused")
        scheme, _, encoded = headers.get("Authorization", "").partition(" ")
        try:
            given = base64.b64decode(encoded, validate=True) if scheme.lower() == "basic" else b""
        except (binascii.Error, ValueError):
            given = b""
        expected = f"{self.settings.webhook_username}:{password}".encode()
        if not hmac.compare_digest(given, expected):
            raise WebhookError("bad or missing credentials")

    def parse(self, body: bytes) -> list[TrackingEvent]:
        return parse_record(body)
