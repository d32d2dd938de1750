"""SendGrid's signed Event Webhook: the signature is verified first, then events are normalised.

Kept apart from the sending backend (as django-anymail keeps `webhooks/` beside `backends/`):
receiving events needs the webhook's public key, never the API key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from types import MappingProxyType

from ..config import SendGridSettings
from ..errors import WebhookError
from .base import TrackingEvent, epoch, subscriber_id

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_EVENT_KINDS = MappingProxyType({
    "processed": "processed", "delivered": "delivered", "deferred": "deferred", "dropped": "dropped",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed", "group_unsubscribe": "unsubscribed", "open": "opened", "click": "clicked",
})


def verify_webhook(public_key: str, payload: bytes, signature: str, timestamp: str, tolerance: int,
                   now: float | None = None) -> bool:
    """True when SendGrid signed this payload (ECDSA over timestamp + body) recently enough."""
    from sendgrid.helpers.eventwebhook import EventWebhook

    if not public_key or not signature or not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    try:
        verifier = EventWebhook(public_key)
        return bool(verifier.verify_signature(payload.decode("utf-8"), signature, timestamp))
    except (ValueError, TypeError, UnicodeDecodeError):
        return False


def parse_events(payload: bytes) -> list[TrackingEvent]:
    """SendGrid's event batch as TrackingEvents; unknown event types are left out."""
    data = json.loads(payload)
    if not isinstance(data, list):
        raise ValueError("the body is not a JSON array of events")
    parsed = []
    for raw in data:
        if not isinstance(raw, dict) or not raw.get("email"):
            continue
        kind = raw.get("event")
        if kind == "bounce":
            kind = "blocked" if raw.get("type") == "blocked" else "bounced"
        else:
            kind = _EVENT_KINDS.get(str(kind))
        if kind is None:
            continue
        parsed.append(TrackingEvent(
            kind=kind, email=str(raw["email"]), timestamp=epoch(raw.get("timestamp", 0)),
            event_id=str(raw.get("sg_event_id", "")), message_id=str(raw.get("sg_message_id", "")).split(".")[0],
            issue=str(raw.get("issue", "")), list_name=str(raw.get("list", "")),
            subscriber_id=subscriber_id(raw.get("subscriber")),
            reason=str(raw.get("reason") or raw.get("response") or raw.get("url") or ""),
            machine=raw.get("sg_machine_open") is True,
        ))
    return parsed


class SendGridReceiver:
    """SendGrid's Event Webhook, verified with `[sendgrid] webhook_public_key`."""

    name = "sendgrid"

    def __init__(self, settings: SendGridSettings) -> None:
        self.settings = settings

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        if not self.settings.webhook_public_key:
            raise WebhookError("[sendgrid] webhook_public_key is not set: webhook calls are refused")
        if not verify_webhook(self.settings.webhook_public_key, body, headers.get(SIGNATURE_HEADER, ""),
                              headers.get(TIMESTAMP_HEADER, ""), self.settings.webhook_tolerance, now=now):
            raise WebhookError("bad or missing signature")

    def parse(self, body: bytes) -> list[TrackingEvent]:
        return parse_events(body)

