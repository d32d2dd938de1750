"""Helpers for web tests: a real uvicorn server on loopback, SendGrid-style webhook signing, and SNS
messages signed the way Amazon SNS signs them."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from newsletter.webhooks.ses import string_to_sign

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


class Daemon:
    """A server program (Debian's Pushgateway, node_exporter, Prometheus) on 127.0.0.1, started for a
    test and ready once `ready_path` answers 200."""

    def __init__(self, argv: list[str], port: int, ready_path: str = "/-/ready") -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not self._answers(ready_path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"{argv[0]} did not start: {self.process.communicate()[1][-2000:]}")
            time.sleep(0.1)

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return str(response.read().decode())

    def stop(self) -> str:
        """Stop it; what it wrote on stderr."""
        self.process.terminate()
        return str(self.process.communicate(timeout=30)[1])



def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


PUSHGATEWAY = shutil.which("prometheus-pushgateway")


class Pushgateway(Daemon):
    """Debian's Pushgateway on loopback, started for the test, keeping pushes in memory only (Debian's
    default keeps them in /var/lib)."""

    def __init__(self) -> None:
        port = free_port()
        super().__init__([str(PUSHGATEWAY), f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="], port)

    def groups(self) -> dict[tuple[str, str], dict]:
        """What it holds of ours, by (job, command): each group's samples without those labels."""
        held: dict[tuple[str, str], dict] = {}
        for (name, labels), v in samples(self.get("/metrics")).items():
            named = dict(labels)
            if name.startswith("newsletter_") and "job" in named:
                rest = tuple(pair for pair in labels if pair[0] not in ("job", "command", "instance"))
                held.setdefault((named["job"], named.get("command", "")), {})[(name, rest)] = v
        return held

class Served:
    """`newsletter serve` in its own process on 127.0.0.1, as an operator runs it."""

    def __init__(self, config: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "newsletter.cli", "--config", str(config), "serve", "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))

    def __enter__(self) -> Served:
        deadline = time.monotonic() + 30
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                probe.request("GET", "/healthz")
                if probe.getresponse().status == 200:
                    return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"newsletter serve did not start: {self.process.communicate()[1]}")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.output = self.process.communicate(timeout=30)


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


TOPIC = "arn:aws:sns:us-east-1:123456789012:newsletter-events"


class SnsSigner:
    """An RSA key and a self-signed certificate made for the test (saved as a PEM), signing SNS messages
    with SHA1withRSA (SignatureVersion 1) or SHA256withRSA (2) as Amazon SNS does."""

    def __init__(self, folder: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = dt.datetime.now(dt.UTC)
        certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                       .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                       .sign(self.key, hashes.SHA256()))
        self.pem = certificate.public_bytes(serialization.Encoding.PEM)
        self.path = folder / "sns-signing.pem"
        self.path.write_bytes(self.pem)

    def message(self, kind: str = "Notification", *, topic: str = TOPIC, at: float | None = None, version: str = "2",
                **fields: str) -> dict[str, str]:
        stamp = dt.datetime.fromtimestamp(time.time() if at is None else at, dt.UTC)
        message = {"Type": kind, "MessageId": str(uuid.uuid4()), "TopicArn": topic,
                   "Timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
                   "SignatureVersion": version,
                   "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",
                   **fields}
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS's version 1 is SHA1
        message["Signature"] = base64.b64encode(self.key.sign(string_to_sign(message), padding.PKCS1v15(),
                                                              digest)).decode()
        return message

    def notification(self, event: dict, **options) -> bytes:
        return json.dumps(self.message(Message=json.dumps(event), **options)).encode()
