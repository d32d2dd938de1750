"""Mailgun's signed webhooks: HMAC-SHA256 of timestamp + token with the webhook signing key, checked
first; then the timestamp's age, and each token used once (Mailgun leaves replay protection to the
receiver). A failure that is permanent because of the address is a bounce; one Mailgun blocks for
the sender's reputation or policy is `blocked`, and a temporary one `deferred`: neither suppresses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..config import MailgunSettings
from ..errors import WebhookError
from ..statuses import EventKind
from .base import TrackingEvent, epoch, json_object

_KINDS: Mapping[str, str] = MappingProxyType({
    "accepted": EventKind.PROCESSED, "delivered": EventKind.DELIVERED, "opened": EventKind.OPENED,
    "clicked": EventKind.CLICKED, "complained": EventKind.COMPLAINED, "unsubscribed": EventKind.UNSUBSCRIBED,
})
# A permanent failure's reason (https://documentation.mailgun.com/docs/mailgun/user-manual/events/)
_PERMANENT: Mapping[str, str] = MappingProxyType({
    "bounce": EventKind.BOUNCED, "suppress-bounce": EventKind.BOUNCED, "suppress-complaint": EventKind.COMPLAINED,
    "suppress-unsubscribe": EventKind.UNSUBSCRIBED, "old": EventKind.DROPPED,
})  # anything else permanent ("generic", "espblock"): not known to be the address's fault


def _kind(data: Mapping[str, Any]) -> str | None:
    event = str(data.get("event", ""))
    if event == "failed":
        if data.get("severity") != "permanent":
            return EventKind.DEFERRED
        return _PERMANENT.get(str(data.get("reason", "")), EventKind.BLOCKED)  # espblock and the like
    return _KINDS.get(event)


def parse_call(payload: bytes) -> list[TrackingEvent]:
    """One webhook call's event as a TrackingEvent (none for an event that is not tracked)."""
    body = json.loads(payload)
    data = body.get("event-data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise ValueError("the body has no event-data object")
    kind, email = _kind(data), str(data.get("recipient", ""))
    if kind is None or not email:
        return []
    variables, status = json_object(data.get("user-variables")), json_object(data.get("delivery-status"))
    headers = json_object(json_object(data.get("message")).get("headers"))
    reason = status.get("description") or status.get("message") or data.get("reason") or ""
    return [TrackingEvent(
        kind=kind, email=email, timestamp=epoch(data.get("timestamp", 0)),
        event_id=f"mailgun:{data['id']}" if data.get("id") else "",
        message_id=str(headers.get("message-id", "")).strip("<>"), issue=str(variables.get("issue", "")),
        list_name=str(variables.get("list", "")), reason=str(reason)[:300],
        machine=bool(json_object(data.get("client-info")).get("bot")),
    )]


class MailgunReceiver:
    """Mailgun's webhooks, verified with the signing key in `[mailgun] webhook_signing_key_env`."""

    name = "mailgun"

    def __init__(self, settings: MailgunSettings) -> None:
        self.settings = settings
        self._seen: dict[str, float] = {}  # tokens used within the tolerance, for this receiver's life
        self._lock = threading.Lock()

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        key = os.environ.get(self.settings.webhook_signing_key_env, "")
        if not key:
            raise WebhookError(f"${self.settings.webhook_signing_key_env} is not set: webhook calls are refused")
        try:
            signature = json.loads(body).get("signature", {})
            timestamp, token, given = str(signature["timestamp"]), str(signature["token"]), str(signature["signature"])
        except (ValueError, AttributeError, KeyError, TypeError):
            raise WebhookError("no signature in the body") from None
        expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given):
            raise WebhookError("bad signature")
        if not timestamp.isdigit() or abs(now - int(timestamp)) > self.settings.webhook_tolerance:
            raise WebhookError("the signed timestamp is too old")
        with self._lock:
            self._seen = {t: at for t, at in self._seen.items() if now - at <= self.settings.webhook_tolerance}
            if token in self._seen:
                raise WebhookError("this token was used already (a replayed call)")
            self._seen[token] = now

    def parse(self, body: bytes) -> list[TrackingEvent]:
        return parse_call(body)
