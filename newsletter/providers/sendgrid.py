"""SendGrid's v3 mail send through the official `sendgrid` library.

One request per batch of up to 1,000 recipients, the issue rendered once and per-recipient values
passed as substitutions. The request body is built as plain data: the library's helper classes
cost about 15 s per million recipients. Errors are handled per SendGrid's semantics: a 400 that
names a personalization fails that recipient and re-sends the rest, one that names none stops
the send; 413 splits the batch (a message too large on its own is refused before anything is
sent); 429 pauses every batch until `X-RateLimit-Reset`; 5xx, 408 and connection errors back off and
retry; a read timeout or a broken answer is `unknown`, because the request may have been
accepted (SendGrid has no idempotency key).
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
from collections.abc import Callable, Sequence
from typing import Any

import sendgrid
from python_http_client.exceptions import HTTPError

from ..config import SendGridSettings
from ..errors import ProviderAuthError, ProviderError, ProviderRejected, ProviderUnavailable
from ..pacing import Pacer
from ..placeholders import PATTERN, SPECIAL, clean, fill, lookup, neutral, one_line
from .base import Envelope, Preview, Recipient, Result, list_unsubscribe
from .mime import eml_previews
from .retry import MaybeSent, Retry, with_retries
from .sendgrid_transport import Connections, Endpoint, Text

MAX_RECIPIENTS = 1000
MAX_MESSAGE_BYTES = 30_000_000  # SendGrid's limit on one request
MAX_SUBSTITUTION_BYTES = 10_000
MAX_RATE_LIMIT_WAIT = 300.0
_PERSONALIZATION = re.compile(r"^personalizations\.(\d+)")


class _BadRequest(Exception):
    status = "400"  # for the metrics

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


class _TooLarge(Exception):
    status = "413"


def _message(body: Any) -> list[dict[str, Any]]:
    try:
        data = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
        errors = data.get("errors", [])
        return errors if isinstance(errors, list) else []
    except (ValueError, AttributeError):
        return []


_json_str = json.encoder.encode_basestring_ascii
_UNSUBSCRIBE_HEADERS = '"List-Unsubscribe":%s,"List-Unsubscribe-Post":"List-Unsubscribe=One-Click"'
# One personalization: email, name member, substitutions, headers, custom_args, subject member.
_PERSONALIZATION_JSON = '{"to":[{"email":%s%s}],"substitutions":{%s},"headers":{%s},"custom_args":{%s}%s}'
CONTENT_TYPE = "application/json; charset=utf-8"


class Payload:
    """Builds mail-send request bodies for one envelope; needs no API key (dry runs use it too).

    Bodies are written as JSON text directly: a million recipients through dicts and
    `json.dumps` cost several seconds more. Every value is encoded by the json module's own
    string encoder, so the text is valid JSON whatever a subscriber's name holds.

    A placeholder used in both parts needs two substitutions (escaped for HTML, plain for text)
    unless no recipient of the request has a value that escaping would change; then the
    request's text part shares the HTML key, which halves the substitutions in the common case.
    """

    def __init__(self, envelope: Envelope, *, open_tracking: bool = False, click_tracking: bool = False) -> None:
        self.envelope = envelope
        # Sent in every request, so the account's defaults never decide what is tracked.
        self._tracking = {"click_tracking": {"enable": click_tracking, "enable_text": False},
                          "open_tracking": {"enable": open_tracking}}
        rendered = envelope.rendered
        self._html_names = frozenset(PATTERN.findall(rendered.html))
        self._text_names = frozenset(PATTERN.findall(rendered.text))
        self._names = sorted(self._html_names | self._text_names)
        # Keys (twice: HTML and text) and defaults, at most 12 bytes a character once escaped and encoded.
        self._key_bytes = sum(len(n) + 10 for n in self._names) * 2 + sum(12 * len(n.partition("|")[2])
                                                                          for n in self._names)
        self._personal_subject = bool(PATTERN.search(rendered.subject)) or bool(envelope.subject_prefix)
        self._suffixes: dict[frozenset[str], str] = {}
        # custom_args shared by every recipient, as JSON members
        self._shared_args = ",".join(f"{_json_str(k)}:{_json_str(str(v))}" for k, v in envelope.custom_args.items())

    def _suffix(self, shared: frozenset[str]) -> str:
        """Everything after the personalizations, for one choice of shared keys."""
        cached = self._suffixes.get(shared)
        if cached is None:
            envelope, rendered = self.envelope, self.envelope.rendered
            text = PATTERN.sub(lambda m: m.group(0) if m.group(1) in shared else f"%%{m.group(1)}:t%%", rendered.text)
            sender: dict[str, str] = {"email": envelope.from_email}
            if envelope.from_name:
                sender["name"] = envelope.from_name
            rest: dict[str, Any] = {
                "from": sender,
                "subject": one_line(envelope.subject_prefix + fill(rendered.subject, neutral(), html_escape=False)),
                "content": [{"type": "text/plain", "value": text}, {"type": "text/html", "value": rendered.html}],
                "categories": [envelope.category],
                "headers": {"List-Id": one_line(envelope.list_id)},
                "tracking_settings": self._tracking,
            }
            if envelope.reply_to:
                rest["reply_to"] = {"email": envelope.reply_to}
            cached = self._suffixes[shared] = "]," + json.dumps(rest)[1:]
        return cached

    def substitution_bytes(self, r: Recipient) -> int:
        """The size of a recipient's substitutions when nothing is shared (the most it can be).

        Cheap bound first: a value is at most 4 bytes a character and 6 once escaped.
        """
        bound = self._key_bytes + 12 * sum(map(len, r.values.values()))
        if bound <= MAX_SUBSTITUTION_BYTES:
            return bound
        total = 0
        for name in self._names:
            value = lookup(r.values, name)
            size = len(value) if value.isascii() else len(value.encode())
            if name in self._html_names:
                total += len(name) + 4 + size * (6 if SPECIAL.search(value) else 1)  # &quot; is 6 bytes
            if name in self._text_names:
                total += len(name) + 6 + size
        return total

    def body(self, recipients: Sequence[Recipient]) -> str:
        """The JSON body of one mail-send request, exactly as it is posted."""
        values = [r.values for r in recipients]
        shared = frozenset(n for n in self._html_names & self._text_names if not _special(values, n))
        keys: list[tuple[str, str, bool | None, str]] = []  # (name, default, escape (None: needs nothing), key)
        for n in self._names:
            name, _, default = n.partition("|")
            if n in shared:
                keys.append((name, default, None, _json_str(f"%%{n}%%") + ":"))
                continue
            if n in self._html_names:
                keys.append((name, default, True, _json_str(f"%%{n}%%") + ":"))
            if n in self._text_names:
                keys.append((name, default, False, _json_str(f"%%{n}:t%%") + ":"))
        personalization = self._personalization
        personalizations = ",".join([personalization(r, keys) for r in recipients])
        return '{"personalizations":[' + personalizations + self._suffix(shared)

    def _personalization(self, r: Recipient, keys: list[tuple[str, str, bool | None, str]]) -> str:
        values = r.values
        name = one_line(r.name).replace(";", " ").replace(",", " ").strip() if r.name else ""
        subs = ",".join([
            key + _json_str((values.get(n) or default) if escape is None
                            else clean(values.get(n) or default, html_escape=escape))
            for n, default, escape, key in keys
        ])
        headers = (_UNSUBSCRIBE_HEADERS % _json_str(list_unsubscribe(self.envelope, r.unsubscribe_url))
                   if r.unsubscribe_url else "")
        own = ",".join([f"{_json_str(k)}:{_json_str(str(v))}" for k, v in r.custom_args.items()])
        args = f"{self._shared_args},{own}" if self._shared_args and own else self._shared_args or own
        subject = ""
        if self._personal_subject:
            text = self.envelope.subject_prefix + fill(self.envelope.rendered.subject, values, html_escape=False)
            subject = ',"subject":' + _json_str(one_line(text))
        return _PERSONALIZATION_JSON % (_json_str(r.email), ',"name":' + _json_str(name) if name else "", subs,
                                        headers, args, subject)


def _special(values: list[dict[str, str]], spec: str) -> bool:
    """Whether the placeholder `spec` (with any default) holds, for any of these recipients, a character
    that escaping for HTML would change: one search over all of them."""
    name, _, default = spec.partition("|")
    found = [v.get(name, "") for v in values]
    return SPECIAL.search("\x00".join(found)) is not None or (bool(SPECIAL.search(default)) and "" in found)


Post = Callable[[str, float], str]  # (request body, timeout) -> X-Message-Id


def _within_limits(payload: Payload, recipients: list[Recipient], results: dict[int, Result]) -> list[Recipient]:
    """The recipients whose substitutions SendGrid takes; the others fail, each with its reason."""
    ready = []
    for r in recipients:
        size = payload.substitution_bytes(r)
        if size > MAX_SUBSTITUTION_BYTES:
            results[r.key] = Result(r.key, "failed", error=f"substitutions are {size} bytes, over SendGrid's "
                                    f"{MAX_SUBSTITUTION_BYTES}: shorten this subscriber's attributes")
        else:
            ready.append(r)
    return ready


class SendGridProvider:
    reports_events = True  # through the signed Event Webhook

    def __init__(self, settings: SendGridSettings, api_key: str, *, max_in_flight: int = 4,
                 sleep: Callable[[float], None] | None = None, post: Post | None = None) -> None:
        self.settings = settings
        self.max_in_flight = max_in_flight
        self.max_batch = min(settings.batch_size, MAX_RECIPIENTS)
        self._client = sendgrid.SendGridAPIClient(api_key=api_key, host=settings.api_base.rstrip("/"))
        self._connections = Connections(settings.api_base)
        self._mail_send = Endpoint(self._client.client.mail.send, self._connections)
        # The HTTP call: (body, timeout) to the X-Message-Id, raising as python-http-client does.
        self._call: Post = post or self._client_post
        self._sleep = sleep
        self._payload: Payload | None = None

    def prepare(self, pacer: Pacer) -> None:
        return None  # nothing to read before a send: limits come back in 429s

    def check(self, envelope: Envelope) -> None:
        """Refuse a message SendGrid can never take, whoever it goes to: before anything is sent."""
        size = len(self._payload_for(envelope).body([]).encode("utf-8"))
        if size >= MAX_MESSAGE_BYTES:
            raise ProviderError(f"the message is {size / 1e6:.1f} MB before any recipient is added; SendGrid takes at "
                                f"most {MAX_MESSAGE_BYTES / 1e6:.0f} MB per request: shorten the issue")

    def preview(self, envelope: Envelope, recipients: Sequence[Recipient], limit: int) -> list[Preview]:
        """The first `limit` messages as `.eml` files and the first request body exactly as it would be posted."""
        files = eml_previews(envelope, recipients, limit)
        batch = list(recipients[:self.max_batch])
        if batch:
            files.append(Preview(f"{envelope.rendered.slug}-sendgrid-request.json",
                                 self._payload_for(envelope).body(batch).encode("utf-8")))
        return files

    def _payload_for(self, envelope: Envelope) -> Payload:
        if self._payload is None or self._payload.envelope is not envelope:
            self._payload = Payload(envelope, open_tracking=self.settings.open_tracking,
                                    click_tracking=self.settings.click_tracking)
        return self._payload

    # -- sending ----------------------------------------------------------------------------

    def _post(self, body: str, pacer: Pacer) -> str | None:
        """POST once, retrying what is safe to retry; the X-Message-Id, or None when the send is stopping.

        A 429 or a back-off pauses every batch of the send (through `pacer`), not only this one.
        """
        return with_retries(lambda: self._attempt(body), pacer, provider="SendGrid", tries=self.settings.max_retries,
                            base=self.settings.retry_backoff, ok=202)

    def _attempt(self, body: str) -> str:
        try:
            return self._call(body, self.settings.timeout)
        except HTTPError as exc:
            raise self._refusal(exc) from None
        except urllib.error.URLError as exc:
            # The connection was never made (refused, DNS, connect timeout): nothing was sent.
            raise Retry(f"connection failed: {exc.reason}") from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise self._after_sending(exc) from None

    def _client_post(self, body: str, timeout: float) -> str:
        # A Content-Type other than the bare "application/json" makes the library send the
        # (already JSON) text as it is instead of encoding it again.
        response = self._mail_send.post(request_body=Text(body), request_headers={"Content-Type": CONTENT_TYPE},
                                        timeout=timeout)
        return str(response.headers.get("X-Message-Id", ""))

    def _refusal(self, exc: HTTPError) -> Exception:
        """An HTTP error answer as what it means: a Retry for 429, 5xx and 408, else the error it is."""
        status, errors = exc.status_code, _message(exc.body)
        detail = "; ".join(str(e.get("message", "")) for e in errors) or str(exc.reason)
        if status in (401, 403):
            return ProviderAuthError(
                f"SendGrid refused the API key ({status}: {detail}); check {self.settings.api_key_env}", status=status)
        if status == 400:
            return _BadRequest(errors)
        if status == 413:
            return _TooLarge()
        if status == 429:
            reset = (exc.headers or {}).get("X-RateLimit-Reset")
            wait = None
            if reset and str(reset).isdigit():
                wait = min(MAX_RATE_LIMIT_WAIT, max(0.0, int(reset) - time.time()) + 0.05)
            return Retry("429 rate limited", wait, status=429)
        if status >= 500 or status == 408:  # 408: the request timed out on the way in, nothing taken
            return Retry(f"{status}: {detail}", status=status)
        return ProviderError(f"SendGrid answered {status}: {detail}", status=status)

    def _after_sending(self, exc: Exception) -> MaybeSent:
        """A failure once the whole request was written (urllib reports failures to write as URLError):
        SendGrid may have accepted it."""
        if isinstance(exc, http.client.RemoteDisconnected):  # closed without an answer
            return MaybeSent(f"SendGrid closed the connection without answering ({exc})")
        if isinstance(exc, (http.client.BadStatusLine, http.client.LineTooLong)):
            # The next answer would be as garbled, so the send stops too.
            return MaybeSent(f"{self.settings.api_base} answered with something that is not HTTP after the request "
                              f"was sent ({type(exc).__name__}); check [sendgrid] api_base and any proxy in between",
                              stop=True)
        # A timeout, a dropped connection, or another answer that is not HTTP.
        return MaybeSent(f"no usable answer from SendGrid after the request was sent "
                          f"({type(exc).__name__}: {exc or 'timeout'})")

    def send(self, envelope: Envelope, recipients: Sequence[Recipient], pacer: Pacer | None = None) -> list[Result]:
        """Results for the recipients handed over; none for those left when the send is stopping."""
        results: dict[int, Result] = {}
        pacer = pacer or Pacer(sleep=self._sleep)
        try:
            self._send(envelope, list(recipients), results, pacer)
        except ProviderError as exc:
            exc.partial = list(results.values())
            raise
        return [results[r.key] for r in recipients if r.key in results]

    def _send(self, envelope: Envelope, recipients: list[Recipient], results: dict[int, Result],
              pacer: Pacer) -> None:
        payload = self._payload_for(envelope)
        ready = _within_limits(payload, recipients, results)
        if not ready:
            return
        try:
            message_id = self._post(payload.body(ready), pacer)
        except MaybeSent as exc:
            for r in ready:
                results[r.key] = Result(r.key, "unknown", error=str(exc))
            if exc.stop:
                raise ProviderUnavailable(f"{exc}: the {len(ready):,} recipients of that request are unknown") from None
        except _TooLarge:
            self._split(envelope, ready, results, pacer)
        except _BadRequest as exc:
            self._isolate(envelope, ready, exc.errors, results, pacer)
        else:
            if message_id is None:
                return  # stopping: these were not handed over and go back to pending
            sent = Result._make  # (a send makes a million of them)
            for r in ready:
                results[r.key] = sent((r.key, "sent", message_id, "", 0.0, False))

    def _split(self, envelope: Envelope, ready: list[Recipient], results: dict[int, Result], pacer: Pacer) -> None:
        """A 413: fewer recipients per request make it smaller; if even one is too many, the message itself
        is too large (a recipient's values are capped far below SendGrid's limit)."""
        if len(ready) == 1:
            raise ProviderRejected("SendGrid answered 413 for a request with a single recipient: the message "
                                   "is too large; shorten the issue. Nothing was marked failed")
        half = len(ready) // 2
        self._send(envelope, ready[:half], results, pacer)
        self._send(envelope, ready[half:], results, pacer)

    def _isolate(self, envelope: Envelope, ready: list[Recipient], errors: list[dict[str, Any]],
                 results: dict[int, Result], pacer: Pacer) -> None:
        """A 400 rejects the whole request: fail the recipients it names and send the others again.

        A 400 that names no recipient is about the message itself: the send stops with
        SendGrid's words and nobody is marked failed.
        """
        bad: dict[int, str] = {}
        for error in errors:
            field = str(error.get("field") or "")
            match = _PERSONALIZATION.match(field)
            if match and int(match.group(1)) < len(ready):
                bad.setdefault(int(match.group(1)), f"400 {field}: {error.get('message', '')}")
        if not bad:
            said = "; ".join(f"{e['field']}: {e.get('message', '')}" if e.get("field") else str(e.get("message", ""))
                             for e in errors) or "400 Bad Request"
            raise ProviderRejected(f"SendGrid rejected the request: {said}; nothing was marked failed")
        for index, message in bad.items():
            results[ready[index].key] = Result(ready[index].key, "failed", error=message)
        rest = [r for i, r in enumerate(ready) if i not in bad]
        if rest:
            self._send(envelope, rest, results, pacer)

    def close(self) -> None:
        self._connections.close()
