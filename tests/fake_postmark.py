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
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


class FakePostmark:
    """The server with its record and script; `start()` runs it in a thread."""

    def __init__(self, token: str = "pm-test-token", *, latency: float = 0.0, record_bodies: bool = True) -> None:
        self.token, self.latency, self.record_bodies = token, latency, record_bodies
        self.lock = threading.Lock()
        self.received: list[str] = []  # every accepted recipient address, in order
        self.messages: list[dict[str, Any]] = []
        self.requests = 0
        self.inactive: set[str] = set()  # addresses answered with ErrorCode 406
        self.script: deque[tuple[int, float, Any]] = deque()  # (status, delay, body) for the next requests
        self.drop: deque[bool] = deque()  # read the next request, then hang up without answering
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _answer(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path != "/_stats":
                    self._answer(404, {"ErrorCode": 404, "Message": "not found"})
                    return
                with server.lock:
                    self._answer(200, {"received": len(server.received), "unique": len(set(server.received)),
                                       "requests": server.requests})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if server.latency:
                    time.sleep(server.latency)
                answer = server.answer(self.path, self.headers, raw)
                if answer is None:  # dropped after reading: the client cannot know what happened
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self._answer(*answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, headers: Any, raw: bytes) -> tuple[int, Any] | None:
        with self.lock:
            self.requests += 1
            scripted = self.script.popleft() if self.script else None
            drop = self.drop.popleft() if self.drop else False
        if path != "/email/batch":
            return 404, {"ErrorCode": 404, "Message": f"no route {path}"}
        if headers.get("X-Postmark-Server-Token") != self.token:
            return 401, {"ErrorCode": 10, "Message": "The Server Token you provided in the X-Postmark-Server-Token "
                                                     "request header was invalid."}
        if scripted is not None:
            status, delay, body = scripted
            time.sleep(delay)
            if status != 200:
                return status, body or {"ErrorCode": status, "Message": f"scripted {status}"}
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

    def answer_next(self, status: int, *, times: int = 1, delay: float = 0.0, body: Any = None) -> None:
        with self.lock:
            self.script.extend([(status, delay, body)] * times)

    def drop_next(self) -> None:
        with self.lock:
            self.drop.append(True)

    def start(self) -> FakePostmark:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", default="pm-test-token")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    args = parser.parse_args()
    server = FakePostmark(args.token, latency=args.latency, record_bodies=False)
    print(server.port, flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
