"""A fake Postmark `/email/batch` server on 127.0.0.1 for tests and benchmarks.

It checks what Postmark documents: the server token header (401 with ErrorCode 10), JSON only,
at most 500 messages and 50 MB per call (422, ErrorCode 410 / 413), and per message a From, a To of
at most 50 addresses, a subject, a body, a known message stream, headers as Name/Value pairs and
Metadata within its limits; a message that breaks one gets its own ErrorCode inside the 200, as an
address on the inactive list gets 406. It records what it accepted and can be scripted to answer
429 or 5xx, to drop the connection after reading a request, or to wait before answering.

    python tests/fake_postmark.py --token T   # prints the port, serves until killed
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

try:
    from .fake_service import FakeService
except ImportError:  # run as a script by the benchmarks
    from fake_service import FakeService  # type: ignore[no-redef]

MAX_MESSAGES = 500
MAX_BYTES = 50 * 1000 * 1000
STREAMS = ("broadcast", "outbound")


def check_message(message: Any) -> tuple[int, str] | None:
    """(ErrorCode, Message) for a message Postmark would refuse, else None."""
    if not isinstance(message, dict):
        return 402, "Received invalid JSON input."
    if not message.get("From"):
        return 300, "Invalid 'From' address: ''."
    to = [part for part in str(message.get("To", "")).split(",") if part.strip()]
    if not to or any("@" not in part for part in to):
        return 300, f"Error parsing 'To': Illegal email address '{message.get('To', '')}'."
    if len(to) > 50:
        return 300, "Maximum of 50 recipients allowed."
    if not message.get("HtmlBody") and not message.get("TextBody"):
        return 300, "Provide either email TextBody or HtmlBody or both."
    if not message.get("Subject"):
        return 300, "Subject is required."
    if message.get("MessageStream", "outbound") not in STREAMS:
        return 1235, f"The message stream '{message.get('MessageStream')}' was not found."
    headers = message.get("Headers", [])
    if not isinstance(headers, list) or not all(isinstance(h, dict) and set(h) == {"Name", "Value"} for h in headers):
        return 300, "Headers must be a list of objects with Name and Value."
    metadata = message.get("Metadata", {})
    if not isinstance(metadata, dict) or len(metadata) > 10 or any(
            len(str(k)) > 20 or not isinstance(v, str) or len(v) > 80 for k, v in metadata.items()):
        return 300, "Metadata: at most 10 fields, keys up to 20 characters, string values up to 80."
    return None


class FakePostmark(FakeService):
    """The server with its record and script; `start()` runs it in a thread."""

    def __init__(self, token: str = "pm-test-token", *, latency: float = 0.0, record_bodies: bool = True) -> None:
        super().__init__(latency=latency, record_bodies=record_bodies)
        self.token = token
        self.messages: list[dict[str, Any]] = []
        self.inactive: set[str] = set()  # addresses answered with ErrorCode 406

    def answer(self, path: str, headers: Any, raw: bytes) -> tuple[int, Any] | None:
        scripted, drop = self.take()
        if path != "/email/batch":
            return 404, {"ErrorCode": 404, "Message": f"no route {path}"}
        if headers.get("X-Postmark-Server-Token") != self.token:
            return 401, {"ErrorCode": 10, "Message": "The Server Token you provided in the X-Postmark-Server-Token "
                                                     "request header was invalid."}
        refused = self.scripted(scripted)
        if refused is not None:
            return refused
        if "application/json" not in headers.get("Content-Type", ""):
            return 415, {"ErrorCode": 409, "Message": "JSON data required."}
        if len(raw) > MAX_BYTES:
            return 422, {"ErrorCode": 413, "Message": "The request is over 50 MB."}
        try:
            batch = json.loads(raw)
        except ValueError:
            return 422, {"ErrorCode": 402, "Message": "Received invalid JSON input."}
        if not isinstance(batch, list):
            return 422, {"ErrorCode": 403, "Message": "A batch is a JSON array of messages."}
        if len(batch) > MAX_MESSAGES:
            return 422, {"ErrorCode": 410, "Message": f"You may send up to {MAX_MESSAGES} messages in a batch."}
        results = [self._one(message) for message in batch]
        return None if drop else (200, results)

    def _one(self, message: Any) -> dict[str, Any]:
        refused = check_message(message)
        if refused is not None:
            return {"ErrorCode": refused[0], "Message": refused[1]}
        address = str(message["To"]).rsplit("<", 1)[-1].rstrip(">").strip().lower()
        if address in self.inactive:
            return {"ErrorCode": 406, "Message": f"You tried to send to recipient(s) that have been marked as "
                                                 f"inactive. Found inactive addresses: {address}."}
        with self.lock:
            self.received.append(address)
            if self.record_bodies:
                self.messages.append(message)
        return {"To": message["To"], "SubmittedAt": "2026-12-01T09:00:00Z", "MessageID": str(uuid.uuid4()),
                "ErrorCode": 0, "Message": "OK"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", default="pm-test-token")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    args = parser.parse_args()
    FakePostmark(args.token, latency=args.latency, record_bodies=False).serve()


if __name__ == "__main__":
    sys.exit(main())
