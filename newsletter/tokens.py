"""Signed, URL-safe tokens for unsubscribe and confirmation links.

A token is `subscriber.context.signature`: the subscriber id, the list and an issue or an expiry
(base64url), and an HMAC-SHA256 (base64url) over all of it and the token's purpose, under the
secret from the environment. The context is the same for every recipient of a send, so it is
encoded once. It is checked without a database lookup; a changed byte, another purpose or
another secret is rejected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass

from .errors import TokenError

UNSUBSCRIBE = "unsubscribe"
CONFIRM = "confirm"


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Claims:
    subscriber_id: int
    list_name: str
    extra: str = ""  # the issue slug for unsubscribe links, the expiry for confirmation links


class Signer:
    """Makes and checks tokens for one purpose under one secret."""

    def __init__(self, secret: bytes, purpose: str) -> None:
        if not secret:
            raise TokenError("a signing secret is required")
        # HMAC-SHA256 keyed once: copying the keyed state per token is twice as fast as
        # hmac.digest, which re-derives the key pads every call (a send makes a million tokens).
        self._mac = hmac.new(secret, purpose.encode() + b"\x00", hashlib.sha256)
        self._contexts: dict[tuple[str, str], tuple[str, bytes]] = {}

    def _signature(self, subscriber: str, context: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(subscriber.encode() + b"|" + context)
        return mac.digest()

    def _context(self, list_name: str, extra: str) -> tuple[str, bytes]:
        found = self._contexts.get((list_name, extra))
        if found is None:
            raw = f"{list_name}|{extra}".encode()
            found = self._contexts[(list_name, extra)] = (_b64(raw), raw)
        return found

    def make(self, subscriber_id: int, list_name: str, extra: str = "") -> str:
        encoded, raw = self._context(list_name, extra)
        subscriber = str(subscriber_id)
        return f"{subscriber}.{encoded}.{_b64(self._signature(subscriber, raw))}"

    def check(self, token: str) -> Claims:
        """The claims of a valid token; TokenError for anything forged, altered or malformed."""
        try:
            subscriber, context_b64, signature_b64 = token.split(".")
            context, signature = _unb64(context_b64), _unb64(signature_b64)
        except (ValueError, binascii.Error):
            raise TokenError("malformed token") from None
        if not subscriber.isdigit() or not hmac.compare_digest(signature, self._signature(subscriber, context)):
            raise TokenError("invalid token signature")
        try:
            list_name, extra = context.decode().split("|")
            return Claims(int(subscriber), list_name, extra)
        except (ValueError, UnicodeDecodeError):
            raise TokenError("malformed token") from None


def unsubscribe_signer(secret: bytes) -> Signer:
    return Signer(secret, UNSUBSCRIBE)


def make_confirm(secret: bytes, subscriber_id: int, list_name: str, ttl: int, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl)
    return Signer(secret, CONFIRM).make(subscriber_id, list_name, str(expires))


def check_confirm(secret: bytes, token: str, now: float | None = None) -> Claims:
    claims = Signer(secret, CONFIRM).check(token)
    if int(claims.extra or 0) < (time.time() if now is None else now):
        raise TokenError("this confirmation link has expired; subscribe again to get a new one")
    return claims
