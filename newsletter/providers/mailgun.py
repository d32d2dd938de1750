"""Mailgun's messages API (`POST /v3/{domain}/messages`): one call per batch of up to 1,000 recipients.

The issue goes once per call, its placeholders turned into Mailgun's `%recipient.KEY%` and each
recipient's values (HTML-escaped for the HTML part) in `recipient-variables`, which is also what
keeps every recipient from seeing the others' addresses: it is always sent. A literal
`%recipient.` in the issue is written so that it comes out as it is; Mailgun substitutes in one
pass, so a subscriber's own text is never read as that syntax. Each recipient gets their own
`List-Unsubscribe` through a recipient variable.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence

import httpx

from ..config import MailgunSettings
from ..errors import ProviderAuthError, ProviderError, ProviderRejected
from ..pacing import Pacer
from ..placeholders import PATTERN, Numbered, one_line
from .base import Envelope, Preview, Recipient, Result, list_unsubscribe
from .http import Answer, LazyClient, answer, check_size, exchange, previews
from .retry import MaybeSent, Retry, with_retries

MAX_RECIPIENTS = 1000
MAX_MESSAGE_BYTES = 25 * 1000 * 1000
_LITERAL = re.compile(r"%recipient\.")
_ESCAPED = "%recipient.pct%recipient."  # comes out as "%recipient." ("pct" is "%")

# (form fields, timeout) -> Mailgun's answer: its status and JSON; raises as httpx does.
Post = Callable[[list[tuple[str, str]], float], Answer]


class Template:
    """The issue once, with Mailgun's recipient variables in place of the placeholders."""

    def __init__(self, envelope: Envelope) -> None:
        rendered = envelope.rendered
        self.numbered = Numbered(rendered.html, rendered.text, rendered.subject)

        def html(match: re.Match[str]) -> str:
            return f"%recipient.{self.numbered.key(match.group(1), html=True)}%"

        def text(match: re.Match[str]) -> str:
            return f"%recipient.{self.numbered.key(match.group(1), html=False)}%"

        self.html = PATTERN.sub(html, _LITERAL.sub(_ESCAPED, rendered.html))
        self.text = PATTERN.sub(text, _LITERAL.sub(_ESCAPED, rendered.text))
        self.subject = one_line(envelope.subject_prefix + PATTERN.sub(text, _LITERAL.sub(_ESCAPED, rendered.subject)))

    def variables(self, envelope: Envelope, r: Recipient) -> dict[str, str]:
        """One recipient's variables: each placeholder's value for the HTML and for text, and their link."""
        link = list_unsubscribe(envelope, r.unsubscribe_url) if r.unsubscribe_url else ""
        return {"pct": "%", "lu": link, **self.numbered.values(r.values)}


class MailgunProvider:
    reports_events = True  # through its signed webhooks

    def __init__(self, settings: MailgunSettings, api_key: str, *, max_in_flight: int = 4,
                 post: Post | None = None) -> None:
        self.settings = settings
        self.max_in_flight = max_in_flight
        self.max_batch = max(1, min(settings.batch_size, MAX_RECIPIENTS))
        self._http = LazyClient(lambda: httpx.Client(base_url=settings.api_base.rstrip("/"), auth=("api", api_key)))
        self._call: Post = post or self._http_post
        self._template: tuple[Envelope, Template] | None = None

    def _template_for(self, envelope: Envelope) -> Template:
        if self._template is None or self._template[0] is not envelope:
            self._template = (envelope, Template(envelope))
        return self._template[1]

    def fields(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[tuple[str, str]]:
        """The form fields of one call, exactly as they are posted."""
        template = self._template_for(envelope)
        fields = [("from", envelope.from_header), ("subject", template.subject), ("html", template.html),
                  ("text", template.text), ("o:tag", envelope.category),
                  ("o:tracking-opens", "yes" if self.settings.track_opens else "no"),
                  ("o:tracking-clicks", "yes" if self.settings.track_clicks else "no"),
                  ("h:List-Id", one_line(envelope.list_id)),
                  ("h:List-Unsubscribe", "%recipient.lu%"),
                  ("h:List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]
        if envelope.reply_to:
            fields.append(("h:Reply-To", envelope.reply_to))
        fields += [(f"v:{key}", value) for key, value in envelope.custom_args.items()]
        fields += [("to", r.email) for r in recipients]
        fields.append(("recipient-variables",
                       json.dumps({r.email: template.variables(envelope, r) for r in recipients})))
        return fields

    def prepare(self, pacer: Pacer) -> None:
        return None  # nothing to read before a send: limits come back in 429s

    def check(self, envelope: Envelope) -> None:
        """Refuse a message Mailgun can never take, whoever it goes to: before anything is sent."""
        check_size(sum(len(value.encode()) for _key, value in self.fields(envelope, [])), MAX_MESSAGE_BYTES, "Mailgun")

    def preview(self, envelope: Envelope, recipients: Sequence[Recipient], limit: int) -> list[Preview]:
        """The first `limit` messages as `.eml` files, and the first call's form fields as JSON."""
        return previews(envelope, recipients, limit, self.max_batch, "mailgun",
                        lambda batch: json.dumps(self.fields(envelope, batch), indent=1).encode())

    def send(self, envelope: Envelope, recipients: Sequence[Recipient], pacer: Pacer | None = None) -> list[Result]:
        """Results for the recipients handed over; none when the send is stopping first."""
        batch = list(recipients)
        fields = self.fields(envelope, batch)
        try:
            message_id = with_retries(functools.partial(self._attempt, fields), pacer or Pacer(), provider="Mailgun",
                                      tries=self.settings.max_retries, base=self.settings.retry_backoff)
        except MaybeSent as exc:
            return [Result(r.key, "unknown", error=str(exc)) for r in batch]
        if message_id is None:
            return []  # stopping: these go back to pending
        return [Result(r.key, "sent", message_id=message_id) for r in batch]

    def _attempt(self, fields: list[tuple[str, str]]) -> str:
        status, data = exchange("Mailgun", lambda: self._call(fields, self.settings.timeout))
        said = str(data.get("message", "")) if isinstance(data, dict) else ""
        if status == 200 and isinstance(data, dict) and data.get("id"):
            return str(data["id"]).strip("<>")
        if status in (401, 403):
            raise ProviderAuthError(f"Mailgun refused the API key ({status}: {said}); check "
                                    f"{self.settings.api_key_env} and [mailgun] domain", status=status)
        if status == 429 or status >= 500:
            raise Retry(f"{status}: {said or 'no message'}", status=status)
        if status in (400, 413):
            raise ProviderRejected(f"Mailgun refused the request: {said or status}; nothing was marked failed",
                                   status=status)
        if status == 200:
            raise MaybeSent("Mailgun answered 200 without a message id")
        raise ProviderError(f"Mailgun answered {status}: {said or 'no message'}", status=status)

    def _http_post(self, fields: list[tuple[str, str]], timeout: float) -> Answer:
        # multipart/form-data: a repeated `to` and large bodies, as Mailgun documents its form.
        return answer(self._http.get().post(f"/v3/{self.settings.domain}/messages",
                                  files=[(key, (None, value)) for key, value in fields], timeout=timeout))

    def close(self) -> None:
        self._http.close()
