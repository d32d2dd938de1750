"""Postmark's batch API (`POST /email/batch`): up to 500 whole messages per call on a broadcast stream.

Every message is filled here, one per recipient, so no provider template syntax ever meets a
subscriber's text. Postmark answers 200 with one result per message, in order: ErrorCode 0 is
accepted, 406 an inactive recipient (a hard bounce, complaint or manual suppression there, which
suppresses the address here too), anything else a refusal of that message. A refusal of the whole
call (422) stops the send with Postmark's words and marks nobody.

The HTTP client is httpx: its exceptions tell a connection never made (nothing sent: retried)
from an answer lost after the request went out (unknown: never retried).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from ..config import PostmarkSettings
from ..errors import ProviderAuthError, ProviderError, ProviderRejected
from ..pacing import Pacer
from ..placeholders import fill, one_line
from .base import Envelope, Preview, Recipient, Result, list_unsubscribe
from .http import Answer, LazyClient, answer, check_size, exchange, previews
from .retry import MaybeSent, Retry, with_retries

MAX_MESSAGES = 500
MAX_MESSAGE_BYTES = 10 * 1000 * 1000  # one message, attachments included
MAX_BATCH_BYTES = 50 * 1000 * 1000
MAX_METADATA_VALUE = 80
INACTIVE = 406  # ErrorCode: the address is inactive (hard bounce, complaint, manual suppression)
TOKEN_HEADER = "X-Postmark-Server-Token"  # noqa: S105 - a header's name

# (request body, timeout) -> Postmark's answer: its status and JSON; raises as httpx does.
Post = Callable[[bytes, float], Answer]


def message(envelope: Envelope, recipient: Recipient, stream: str, *, track_opens: bool,
            track_links: bool) -> dict[str, Any]:
    """One recipient's message as Postmark takes it, their values filled in (escaped in the HTML)."""
    rendered = envelope.rendered
    name = one_line(recipient.name).replace('"', "").strip()
    headers = [{"Name": "List-Id", "Value": one_line(envelope.list_id)}]
    if recipient.unsubscribe_url:
        headers += [{"Name": "List-Unsubscribe", "Value": list_unsubscribe(envelope, recipient.unsubscribe_url)},
                    {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"}]
    body: dict[str, Any] = {
        "From": envelope.from_header,
        "To": f'"{name}" <{recipient.email}>' if name else recipient.email,
        "Subject": one_line(envelope.subject_prefix + fill(rendered.subject, recipient.values, html_escape=False)),
        "HtmlBody": fill(rendered.html, recipient.values, html_escape=True),
        "TextBody": fill(rendered.text, recipient.values, html_escape=False),
        "Headers": headers,
        "Tag": envelope.category[:1000],
        "Metadata": {k: v[:MAX_METADATA_VALUE] for k, v in {**envelope.custom_args, **recipient.custom_args}.items()},
        "MessageStream": stream,
        "TrackOpens": track_opens,
        "TrackLinks": "HtmlAndText" if track_links else "None",
    }
    if envelope.reply_to:
        body["ReplyTo"] = envelope.reply_to
    return body


class PostmarkProvider:
    reports_events = True  # through its webhooks

    def __init__(self, settings: PostmarkSettings, token: str, *, max_in_flight: int = 4,
                 post: Post | None = None) -> None:
        self.settings = settings
        self.max_in_flight = max_in_flight
        self.max_batch = max(1, min(settings.batch_size, MAX_MESSAGES))
        self._http = LazyClient(lambda: httpx.Client(base_url=settings.api_base.rstrip("/"), headers={
            "Accept": "application/json", "Content-Type": "application/json", TOKEN_HEADER: token}))
        self._call: Post = post or self._http_post

    def _message(self, envelope: Envelope, recipient: Recipient) -> dict[str, Any]:
        return message(envelope, recipient, self.settings.message_stream, track_opens=self.settings.track_opens,
                       track_links=self.settings.track_links)

    def prepare(self, pacer: Pacer) -> None:
        return None  # nothing to read before a send: limits come back in 429s

    def check(self, envelope: Envelope) -> None:
        """Refuse a message Postmark can never take, whoever it goes to: before anything is sent."""
        sample = Recipient(0, "check@example.com", "", {}, "")
        check_size(len(json.dumps(self._message(envelope, sample)).encode()), MAX_MESSAGE_BYTES, "Postmark")

    def preview(self, envelope: Envelope, recipients: Sequence[Recipient], limit: int) -> list[Preview]:
        """The first `limit` messages as `.eml` files, and the first request body as it would be posted."""
        return previews(envelope, recipients, limit, self.max_batch, "postmark",
                        functools.partial(self._body, envelope))

    def _body(self, envelope: Envelope, recipients: Sequence[Recipient]) -> bytes:
        """The JSON array of messages, encoded one message at a time so only the bytes stay in memory."""
        return b"[" + b",".join(json.dumps(self._message(envelope, r)).encode() for r in recipients) + b"]"

    def send(self, envelope: Envelope, recipients: Sequence[Recipient], pacer: Pacer | None = None) -> list[Result]:
        """Results for the recipients handed over; none for those left when the send is stopping."""
        pacer = pacer or Pacer()
        batches = _within(self._body, envelope, list(recipients))
        results: list[Result] = []
        try:
            for batch, body in batches:
                items = with_retries(functools.partial(self._attempt, body), pacer, provider="Postmark",
                                     tries=self.settings.max_retries, base=self.settings.retry_backoff)
                if items is None:
                    break  # stopping: the rest goes back to pending
                results.extend(_results(batch, items))
        except MaybeSent as exc:
            results.extend(Result(r.key, "unknown", error=str(exc)) for r in batch)
        except ProviderError as exc:
            exc.partial = results
            raise
        return results

    def _attempt(self, body: bytes) -> list[Any]:
        status, data = exchange("Postmark", lambda: self._call(body, self.settings.timeout))
        if status == 200 and isinstance(data, list):
            return data
        raise self._refusal(status, data)

    def _refusal(self, status: int, data: Any) -> Exception:
        said = data.get("Message", "") if isinstance(data, dict) else ""
        code = data.get("ErrorCode") if isinstance(data, dict) else None
        if status == 401 or code == 10:
            return ProviderAuthError(f"Postmark refused the server token ({status}: {said}); check "
                                     f"{self.settings.server_token_env}", status=status)
        if status == 429 or status >= 500:
            return Retry(f"{status}: {said or 'no message'}", status=status)
        if status == 422:
            return ProviderRejected(f"Postmark refused the request: {said} (ErrorCode {code}); nothing was marked "
                                    f"failed", status=status)
        if status == 200:
            return MaybeSent("Postmark answered 200 without a result per message")
        return ProviderError(f"Postmark answered {status}: {said or 'no message'}", status=status)

    def _http_post(self, body: bytes, timeout: float) -> Answer:
        return answer(self._http.get().post("/email/batch", content=body, timeout=timeout))

    def close(self) -> None:
        self._http.close()


def _within(body: Callable[[Envelope, Sequence[Recipient]], bytes], envelope: Envelope,
            recipients: list[Recipient]) -> list[tuple[list[Recipient], bytes]]:
    """The recipients in requests under Postmark's 50 MB per call, each with its body."""
    made = body(envelope, recipients)
    if len(made) < MAX_BATCH_BYTES or len(recipients) == 1:
        return [(recipients, made)]
    half = len(recipients) // 2
    return _within(body, envelope, recipients[:half]) + _within(body, envelope, recipients[half:])


def _results(batch: list[Recipient], items: list[Any]) -> list[Result]:
    """Postmark's answers, in the order of the messages; one missing is unknown."""
    results = []
    for index, r in enumerate(batch):
        item = items[index] if index < len(items) and isinstance(items[index], dict) else None
        if item is None:
            results.append(Result(r.key, "unknown", error="Postmark gave no result for this message"))
        elif item.get("ErrorCode") == 0:
            results.append(Result(r.key, "sent", message_id=str(item.get("MessageID", ""))))
        else:
            said = f"Postmark {item.get('ErrorCode')}: {item.get('Message', '')}"
            results.append(Result(r.key, "failed", error=said, inactive=item.get("ErrorCode") == INACTIVE))
    return results
