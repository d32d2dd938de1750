"""Amazon SES events through SNS: each call is an SNS message, verified before anything else.

The signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) is checked with the certificate
at `SigningCertURL`, fetched only over HTTPS from an `sns.<region>.amazonaws.com` host and kept, or
with the PEM in `[ses] sns_certificate_file` (pinned; nothing is fetched). Then the topic must be
`[ses] sns_topic_arn` and the signed timestamp recent. A `SubscriptionConfirmation` for that topic
is confirmed by visiting its `SubscribeURL` (again only on an SNS host); one for any other topic is
refused. Notifications carry SES's events, in either of its formats (event publishing's
`eventType`, notifications' `notificationType`): a permanent bounce or a complaint suppresses; a
transient bounce, or one SES blames on the message (content rejected), never does.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..config import SesSettings
from ..errors import WebhookError
from ..statuses import EventKind
from .base import TrackingEvent, json_object, received, subscriber_id

_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_HASHES: Mapping[str, Callable[[], hashes.HashAlgorithm]] = MappingProxyType({"1": hashes.SHA1, "2": hashes.SHA256})
_SIGNED = MappingProxyType({
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
})
# Transient bounces SES blames on the message rather than the mailbox: the sender's doing.
_SENDERS_FAULT = frozenset({"ContentRejected", "AttachmentRejected"})
_SIMPLE: Mapping[str, str] = MappingProxyType({
    "Delivery": EventKind.DELIVERED, "Send": EventKind.PROCESSED, "Open": EventKind.OPENED,
    "Click": EventKind.CLICKED, "DeliveryDelay": EventKind.DEFERRED, "Reject": EventKind.BLOCKED,
    "Rendering Failure": EventKind.BLOCKED,
})
_MAX_CERTIFICATES = 16

Get = Callable[[str], bytes]  # an HTTPS GET: the body, or an exception


def _https_get(url: str) -> bytes:
    import httpx

    response = httpx.get(url, timeout=10.0, follow_redirects=False)
    response.raise_for_status()
    return response.content


def sns_url(url: object, what: str) -> str:
    """`url` when it is HTTPS on an SNS host (as AWS's own SDKs check); WebhookError otherwise."""
    parts = urlsplit(str(url))
    if parts.scheme != "https" or not _SNS_HOST.match(parts.hostname or "") or parts.username or parts.port:
        raise WebhookError(f"the {what} is not on an https://sns.<region>.amazonaws.com address")
    return str(url)


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """What SNS signs: each signed key present in the message and its value, one per line."""
    keys = _SIGNED.get(str(message.get("Type", "")))
    if keys is None:
        raise WebhookError(f"unknown SNS message type {message.get('Type')!r}")
    return "".join(f"{key}\n{message[key]}\n" for key in keys if key in message).encode()


class SesReceiver:
    """SNS notifications of SES events for `[ses] sns_topic_arn`."""

    name = "ses"

    def __init__(self, settings: SesSettings, *, get: Get = _https_get) -> None:
        self.settings = settings
        self._get = get
        self._certificates: dict[str, rsa.RSAPublicKey] = {}  # by SigningCertURL, for this receiver's life
        self._lock = threading.Lock()

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        if not self.settings.sns_topic_arn:
            raise WebhookError("[ses] sns_topic_arn is not set: SNS notifications are refused")
        message = _message(body)
        version = str(message.get("SignatureVersion", ""))
        if version not in _HASHES:
            raise WebhookError(f"unsupported SNS SignatureVersion {version!r}")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookError("the signature is not base64") from None
        key = self._key(message.get("SigningCertURL"))
        try:
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), _HASHES[version]())
        except InvalidSignature:
            raise WebhookError("bad signature") from None
        if message.get("TopicArn") != self.settings.sns_topic_arn:
            raise WebhookError(f"the message is for another topic ({message.get('TopicArn')}), not "
                               f"[ses] sns_topic_arn")
        try:
            at = dt.datetime.fromisoformat(str(message.get("Timestamp", "")).replace("Z", "+00:00"))
        except ValueError:
            raise WebhookError("the signed timestamp cannot be read") from None
        if abs(now - at.timestamp()) > self.settings.webhook_tolerance:
            raise WebhookError("the signed timestamp is too old")

    def _key(self, url: object) -> rsa.RSAPublicKey:
        """The signing certificate's key: the pinned PEM, or the one at `url` (fetched once, kept)."""
        source = self.settings.sns_certificate_file or sns_url(url, "SigningCertURL")
        with self._lock:
            if source in self._certificates:
                return self._certificates[source]
        try:
            pem = Path(source).read_bytes() if self.settings.sns_certificate_file else self._get(source)
            key = x509.load_pem_x509_certificate(pem).public_key()
        except Exception as exc:  # noqa: BLE001 - any failure to get or read it refuses the call, in one line
            raise WebhookError(f"the SNS signing certificate could not be had ({type(exc).__name__})") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookError("the SNS signing certificate has no RSA key")
        with self._lock:
            if len(self._certificates) >= _MAX_CERTIFICATES:
                self._certificates.clear()
            self._certificates[source] = key
        return key

    def parse(self, body: bytes) -> list[TrackingEvent]:
        """The SES events of one verified SNS message. A subscription confirmation for the configured
        topic (the only kind verify lets through) is confirmed here, and has no events."""
        message = _message(body)
        kind = message.get("Type")
        if kind == "SubscriptionConfirmation":
            url = sns_url(message.get("SubscribeURL"), "SubscribeURL")
            try:
                self._get(url)
            except Exception as exc:  # noqa: BLE001 - SNS sends the confirmation again; say why in one line
                raise ValueError(f"the subscription could not be confirmed ({type(exc).__name__})") from None
            return []
        if kind != "Notification":
            return []
        try:
            event = json.loads(str(message.get("Message", "")))
        except ValueError:
            raise ValueError("the SNS message is not an SES event") from None
        if not isinstance(event, dict):
            raise ValueError("the SNS message is not an SES event")
        return events(event, str(message.get("MessageId", "")))


def _message(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError:
        raise WebhookError("the body is not an SNS message") from None
    if not isinstance(message, dict):
        raise WebhookError("the body is not an SNS message")
    return message


def _when(value: object) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(dt.UTC).replace(tzinfo=None)
    except ValueError:
        return received()


def _ours(mail: Mapping[str, Any]) -> dict[str, str]:
    """Our custom arguments as they came back: SES tags (event publishing), else the X-Newsletter-* headers."""
    found = {str(h.get("name", "")).lower(): str(h.get("value", "")) for h in mail.get("headers", []) or []
             if isinstance(h, dict)}
    values = {key: found.get(f"x-newsletter-{key}", "") for key in ("issue", "list", "subscriber")}
    for key, tagged in json_object(mail.get("tags")).items():
        if key in values and isinstance(tagged, list) and tagged:
            values[key] = str(tagged[0])
    return values


def _detail(event: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The object an SES event keeps its details in: "Rendering Failure" in `renderingFailure`, and so on."""
    return json_object(event.get(kind[:1].lower() + kind[1:].replace(" ", ""))) if kind else {}


def _affected(event: Mapping[str, Any], kind: str) -> list[tuple[str, str, str]]:
    """(address, event kind, reason) for each recipient the SES event is about."""
    if kind == "Bounce":
        bounce = json_object(event.get("bounce"))
        sub = str(bounce.get("bounceSubType", ""))
        what: str
        if bounce.get("bounceType") == "Permanent":
            what = EventKind.BOUNCED
        else:
            what = EventKind.BLOCKED if sub in _SENDERS_FAULT else EventKind.DEFERRED
        return [(str(r.get("emailAddress", "")), what, str(r.get("diagnosticCode") or sub))
                for r in bounce.get("bouncedRecipients", []) if isinstance(r, dict)]
    if kind == "Complaint":
        complaint = json_object(event.get("complaint"))
        if complaint.get("complaintFeedbackType") == "not-spam":
            return []
        return [(str(r.get("emailAddress", "")), EventKind.COMPLAINED, str(complaint.get("complaintFeedbackType", "")))
                for r in complaint.get("complainedRecipients", []) if isinstance(r, dict)]
    simple = _SIMPLE.get(kind)
    if simple is None:
        return []
    detail = _detail(event, kind)
    reason = str(detail.get("reason") or detail.get("errorMessage") or detail.get("link") or "")
    mail = json_object(event.get("mail"))
    recipients = detail.get("recipients") or mail.get("destination") or []
    return [(str(address), simple, reason) for address in recipients]


def events(event: Mapping[str, Any], sns_id: str) -> list[TrackingEvent]:
    """One SES event (either format) as TrackingEvents, one per recipient it is about."""
    kind = str(event.get("eventType") or event.get("notificationType") or "")
    mail = json_object(event.get("mail"))
    ours = _ours(mail)
    at = _when(_detail(event, kind).get("timestamp") or mail.get("timestamp"))
    found = []
    for address, what, reason in _affected(event, kind):
        if not address:
            continue
        found.append(TrackingEvent(
            kind=what, email=address.rpartition("<")[2].rstrip(">").strip(), timestamp=at,
            event_id=f"ses:{sns_id}:{address.lower()}" if sns_id else "",
            message_id=str(mail.get("messageId", "")), issue=ours["issue"], list_name=ours["list"],
            subscriber_id=subscriber_id(ours["subscriber"]), reason=reason[:300]))
    return found
