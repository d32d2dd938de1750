"""A fake Mailgun `POST /v3/{domain}/messages` server on 127.0.0.1 for tests and benchmarks.

It checks what Mailgun documents: basic auth `api:KEY` (401), the domain (404), multipart or
urlencoded form fields, a from, at least one and at most 1,000 `to`, a subject, a body, and
`recipient-variables` as a JSON object with an entry per `to` whenever there is more than one
(without it every recipient would see every address: the fake records that as a leak). It then
builds each recipient's message the way Mailgun does, substituting `%recipient.KEY%` in one pass,
and records them. It can be scripted to answer 429, 5xx or 400, or to drop the connection after
reading a request.

    python tests/fake_mailgun.py --key K --domain D   # prints the port, serves until killed
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import email.policy
import json
import re
import sys
import uuid
from typing import Any
from urllib.parse import parse_qsl

try:
    from .fake_service import FakeService
except ImportError:  # run as a script by the benchmarks
    from fake_service import FakeService  # type: ignore[no-redef]

MAX_TO = 1000
_VARIABLE = re.compile(r"%recipient\.([A-Za-z0-9_-]+)%")


def form_fields(content_type: str, raw: bytes) -> list[tuple[str, str]]:
    """The posted fields, in order, from a multipart or urlencoded body."""
    if content_type.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        found = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            found.append((str(name), part.get_payload(decode=True).decode("utf-8")))
        return found
    return parse_qsl(raw.decode("utf-8"), keep_blank_values=True)


def substitute(text: str, variables: dict[str, Any]) -> str:
    """Mailgun's substitution: one pass, a missing variable becomes empty."""
    return _VARIABLE.sub(lambda m: str(variables.get(m.group(1), "")), text)


class FakeMailgun(FakeService):
    def __init__(self, key: str = "mg-key", domain: str = "mg.example.com", *, latency: float = 0.0,
                 record_bodies: bool = True) -> None:
        super().__init__(latency=latency, record_bodies=record_bodies)
        self.key, self.domain = key, domain
        self.messages: list[dict[str, Any]] = []  # per recipient: to, subject, html, text, headers
        self.leaks = 0  # calls with several `to` and no recipient-variables

    def answer(self, path: str, headers: Any, raw: bytes) -> tuple[int, Any] | None:
        scripted, drop = self.take()
        expected = "Basic " + base64.b64encode(f"api:{self.key}".encode()).decode()
        if headers.get("Authorization") != expected:
            return 401, {"message": "Invalid private key"}
        if path != f"/v3/{self.domain}/messages":
            return 404, {"message": f"Domain not found: {path}"}
        refused = self.scripted(scripted)
        if refused is not None:
            return refused
        fields = form_fields(headers.get("Content-Type", ""), raw)
        refused = self._check(fields)
        if refused:
            return 400, {"message": refused}
        self._accept(fields)
        return None if drop else (200, {"id": f"<{uuid.uuid4().hex}@{self.domain}>", "message": "Queued. Thank you."})

    def _check(self, fields: list[tuple[str, str]]) -> str:
        one = dict(fields)
        to = [value for key, value in fields if key == "to"]
        if not one.get("from"):
            return "from parameter is missing"
        if not to:
            return "to parameter is missing"
        if len(to) > MAX_TO:
            return f"Too many recipients: at most {MAX_TO}"
        if not one.get("subject"):
            return "subject parameter is missing"
        if not one.get("html") and not one.get("text"):
            return "Need at least one of 'text' or 'html' parameters specified"
        if "recipient-variables" in one:
            try:
                variables = json.loads(one["recipient-variables"])
            except ValueError:
                return "recipient-variables parameter is not a valid JSON"
            if not isinstance(variables, dict):
                return "recipient-variables parameter is not a valid JSON object"
        elif len(to) > 1:
            with self.lock:
                self.leaks += 1
        return ""

    def _accept(self, fields: list[tuple[str, str]]) -> None:
        one = dict(fields)
        variables = json.loads(one.get("recipient-variables", "{}"))
        if not self.record_bodies:  # a benchmark's server: count, do not build the messages
            with self.lock:
                self.received.extend(value.lower() for key, value in fields if key == "to")
            return
        for address in (value for key, value in fields if key == "to"):
            mine = variables.get(address, {})
            message = {"to": address, "subject": substitute(one["subject"], mine),
                       "html": substitute(one.get("html", ""), mine), "text": substitute(one.get("text", ""), mine),
                       "headers": {k[2:]: substitute(v, mine) for k, v in fields if k.startswith("h:")},
                       "variables": {k[2:]: v for k, v in fields if k.startswith("v:")},
                       "options": {k[2:]: v for k, v in fields if k.startswith("o:")}}
            with self.lock:
                self.received.append(address.lower())
                if self.record_bodies:
                    self.messages.append(message)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", default="mg-key")
    parser.add_argument("--domain", default="mg.example.com")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    args = parser.parse_args()
    FakeMailgun(args.key, args.domain, latency=args.latency, record_bodies=False).serve()


if __name__ == "__main__":
    sys.exit(main())
