"""A fake SendGrid v3 mail-send server on 127.0.0.1 for tests and benchmarks.

It checks what the real API checks and the schema does not (authorization, at most 1,000
recipients, each address once per request, string custom_args, substitutions within 10,000
bytes per personalization), records every recipient it accepted, and can be scripted to answer
429, 500, 400 naming a personalization, 401, 413, to stall past the client's timeout, or to
answer something that is not HTTP after accepting a request.

    python tests/fake_sendgrid.py --port 0 --key SG.x   # prints the port, serves until killed
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
from urllib.parse import urlsplit


def check_body(body: Any) -> list[dict[str, str]]:
    """The errors SendGrid would answer with (empty when the body is acceptable)."""
    errors: list[dict[str, str]] = []

    def err(field: str, message: str) -> None:
        errors.append({"field": field, "message": message, "help": None})

    if not isinstance(body, dict):
        return [{"field": "", "message": "body must be a JSON object"}]
    ps = body.get("personalizations")
    if not isinstance(ps, list) or not ps:
        err("personalizations", "The personalizations field is required and must have at least 1 item.")
        return errors
    if len(ps) > 1000:
        err("personalizations", "The personalizations field must have at most 1000 items.")
    if not isinstance(body.get("from"), dict) or "@" not in str(body["from"].get("email", "")):
        err("from.email", "The from object must be provided for every email send.")
    content = body.get("content")
    if not isinstance(content, list) or not content:
        err("content", "Unless a valid template_id is provided, the content parameter is required.")
    elif content[0].get("type") != "text/plain" and any(c.get("type") == "text/plain" for c in content):
        err("content", "If present, text/plain content must be first.")
    seen: set[str] = set()
    recipients = 0
    for i, p in enumerate(ps):
        if not body.get("subject") and not p.get("subject"):
            err(f"personalizations.{i}.subject", "The subject is required.")
        for kind in ("to", "cc", "bcc"):
            for j, address in enumerate(p.get(kind, []) or []):
                recipients += 1
                email = str(address.get("email", "")).lower()
                if "@" not in email:
                    err(f"personalizations.{i}.{kind}.{j}.email", "Does not contain a valid address.")
                if email in seen:
                    err(f"personalizations.{i}.{kind}.{j}.email",
                        "Each email address in the personalization block should be unique.")
                seen.add(email)
        if not p.get("to"):
            err(f"personalizations.{i}.to", "The to array is required for all personalization objects.")
        for key, value in (p.get("custom_args") or {}).items():
            if not isinstance(value, str):
                err(f"personalizations.{i}.custom_args.{key}", "custom_args values must be strings.")
        subs = p.get("substitutions") or {}
        if sum(len(k.encode()) + len(str(v).encode()) for k, v in subs.items()) > 10_000:
            err(f"personalizations.{i}.substitutions", "The substitutions must total less than 10000 bytes.")
    if recipients > 1000:
        err("personalizations", "The total number of recipients must be no more than 1000.")
    return errors


class FakeSendGrid:
    """The server with its record and script; `start()` runs it in a thread."""

    def __init__(self, api_key: str = "SG.test-key", *, record_bodies: bool = True, max_body: int = 30_000_000,
                 port: int = 0, latency: float = 0.0) -> None:
        self.api_key = api_key
        self.record_bodies = record_bodies
        self.max_body = max_body
        self.lock = threading.Lock()
        self.received: list[str] = []  # every accepted recipient address, in order
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        self.script: deque[tuple[int, dict[str, str], float, list[dict[str, Any]] | None]] = deque()
        self.reject: dict[str, str] = {}  # address -> message: answer 400 naming its personalization
        self.stall = 0.0  # seconds to sleep before answering (the request is accepted first)
        self.gate = threading.Event()  # answers to accepted requests wait while it is clear
        self.gate.set()
        self.garbage: deque[bytes] = deque()  # what to answer instead of HTTP, after accepting the request
        self.drop: deque[bool] = deque()  # accept the next request, then hang up without answering
        self.latency = latency  # seconds every answer takes, as a real API's round trip
        self.connections = 0  # TCP connections accepted
        self.proxied = 0  # requests that came as to a proxy (an absolute URL), served as if forwarded
        self.close_idle = False  # close each connection after its answer, unannounced, as an idle timeout does
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def setup(self) -> None:
                super().setup()
                with server.lock:
                    server.connections += 1

            def _answer(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/_stats":
                    with server.lock:
                        self._answer(200, {"received": len(server.received), "unique": len(set(server.received)),
                                           "requests": server.requests})
                else:
                    self._answer(404, {"errors": [{"message": "not found"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if server.latency:
                    time.sleep(server.latency)
                with server.lock:
                    server.requests += 1
                    scripted = server.script.popleft() if server.script else None
                if self.path.startswith("http://"):
                    with server.lock:
                        server.proxied += 1
                    self.path = urlsplit(self.path).path
                if self.path != "/v3/mail/send":
                    return self._answer(404, {"errors": [{"message": f"no route {self.path}"}]})
                if self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._answer(401, {"errors": [{"message": "The provided authorization grant is invalid, "
                                                                     "expired, or revoked", "field": None}]})
                if scripted is not None:
                    status, headers, delay, errors = scripted
                    time.sleep(delay)
                    if status != 202:
                        return self._answer(
                            status, {"errors": errors or [{"message": f"scripted {status}", "field": None}]}, headers)
                if length > server.max_body:
                    return self._answer(413, {"errors": [{"message": "Payload Too Large", "field": None}]})
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._answer(400, {"errors": [{"message": "Bad Request", "field": None}]})
                errors = check_body(body)
                for i, p in enumerate(body.get("personalizations") or []):
                    for address in p.get("to", []):
                        if address.get("email") in server.reject:
                            errors.append({"field": f"personalizations.{i}.to.0.email",
                                           "message": server.reject[address["email"]], "help": None})
                if errors:
                    return self._answer(400, {"errors": errors})
                with server.lock:
                    server.received.extend(a["email"] for p in body["personalizations"] for a in p["to"])
                    if server.record_bodies:
                        server.bodies.append(body)
                    stall = server.stall
                    garbage = server.garbage.popleft() if server.garbage else None
                    drop = server.drop.popleft() if server.drop else False
                if drop:  # accepted, and the answer is lost: the client cannot know
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                if stall:
                    time.sleep(stall)
                server.gate.wait()
                if garbage is not None:  # a proxy's error page, a broken keep-alive: not an HTTP answer
                    self.wfile.write(garbage)
                    self.close_connection = True
                    return None
                self._answer(202, None, {"X-Message-Id": uuid.uuid4().hex[:22]})
                if server.close_idle:
                    self.close_connection = True
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> FakeSendGrid:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def drop_next(self) -> None:
        """Accept the next request, then hang up without answering."""
        with self.lock:
            self.drop.append(True)

    def garble_next(self, data: bytes) -> None:
        """Accept the next request, then answer it with `data`, which is not HTTP, and hang up."""
        with self.lock:
            self.garbage.append(data)

    def answer_next(self, status: int, headers: dict[str, str] | None = None, delay: float = 0.0, times: int = 1,
                    errors: list[dict[str, Any]] | None = None) -> None:
        """Answer the next `times` requests with `status` (and these `errors` in the body, if given)."""
        with self.lock:
            for _ in range(times):
                self.script.append((status, headers or {}, delay, errors))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", default="SG.test-key")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    args = parser.parse_args()
    server = FakeSendGrid(args.key, record_bodies=False, latency=args.latency)
    print(server.port, flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
