"""Helpers for web tests: a real uvicorn server on loopback, and SendGrid-style webhook signing."""

from __future__ import annotations

import base64
import json
import threading
import time

import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .smtp_server import free_port


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 in a thread."""

    def __init__(self, app, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


class WebhookSigner:
    """A P-256 key pair made for the test, signing like SendGrid's Event Webhook."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_key = base64.b64encode(der).decode()

    def sign(self, body: bytes, timestamp: str) -> str:
        return base64.b64encode(self.key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        return {"X-Twilio-Email-Event-Webhook-Signature": self.sign(body, stamp),
                "X-Twilio-Email-Event-Webhook-Timestamp": stamp, "Content-Type": "application/json"}


def event_batch(issue: str, ids: dict[str, int], timestamp: int) -> bytes:
    """Real-shaped SendGrid events for the sample readers."""
    def ev(email: str, event: str, n: int, **extra) -> dict:
        return {"email": email, "timestamp": timestamp, "event": event, "sg_event_id": f"evt-{n}",
                "sg_message_id": f"msg{n}.filterdrecv-1", "issue": issue, "list": "weekly",
                "subscriber": str(ids[email]), "category": [issue], **extra}

    return json.dumps([
        ev("ada@example.com", "delivered", 1, response="250 OK"),
        ev("ada@example.com", "open", 2, useragent="Mozilla/5.0", ip="192.0.2.1"),
        ev("ada@example.com", "click", 3, url="https://example.org/blog/delivery-ledger"),
        ev("grace@example.org", "bounce", 4, type="bounce", reason="550 5.1.1 user unknown", status="5.1.1"),
        ev("alan@example.com", "bounce", 5, type="blocked", reason="421 try later", status="4.0.0"),
        ev("katherine@example.org", "spamreport", 6),
        ev("edsger@example.com", "unsubscribe", 7),
        ev("barbara@example.org", "deferred", 8, response="451 busy", attempt="1"),
        ev("linus@example.com", "processed", 9),
        ev("margaret@example.org", "brand_new_event_type", 10),
    ]).encode()
