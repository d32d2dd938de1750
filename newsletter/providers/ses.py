"""Amazon SES v2's `SendBulkEmail`: up to 50 destinations per call, one inline template filled per entry.

The issue goes once per call as the template, its placeholders turned into `{{hN}}` (HTML, values
escaped here) and `{{tN}}` (text and subject); each entry carries its recipient's values in
`ReplacementTemplateData` and its own `List-Unsubscribe` in `ReplacementHeaders`. SES substitutes
inline templates simply, so every `{`, `}` and `\\` of the issue itself is written as a variable
(`{{ob}}`, `{{cb}}`, `{{bs}}`) whose value is that character: nothing in the issue or in a
subscriber's text can be read as template syntax.

SES answers 200 with a status per entry, in order: SUCCESS is accepted; throttling and transient
failures are tried again after a pause that holds every batch, then left deferred; a daily quota
used up stops the send with the rest pending; a status that is about the account (sending paused,
the sender not verified) stops it too and marks nobody; MESSAGE_REJECTED and the like fail that
recipient alone. The rate comes from `GetAccount` at start. The client is boto3's `sesv2`, with
botocore's own retries off: a request whose answer is lost is unknown, never sent again unasked.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from email import policy
from email.utils import formataddr
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..config import SesSettings
from ..errors import ProviderAuthError, ProviderError, ProviderRejected, ProviderUnavailable
from ..pacing import Pacer
from ..placeholders import PATTERN, Numbered, one_line
from .base import Envelope, Preview, Recipient, Result, list_unsubscribe
from .http import check_size, previews
from .retry import MaybeSent, Retry, backoff, with_retries

if TYPE_CHECKING:
    from botocore.client import BaseClient

MAX_ENTRIES = 50
CALLS_PER_BATCH = 10  # SendBulkEmail calls per batch the ledger hands over, made at once
MAX_TEMPLATE_BYTES = 1000 * 1000  # an inline template: subject, HTML and text together
_SYNTAX = re.compile(r"[{}\\]")
_LITERALS: Mapping[str, str] = MappingProxyType({"{": "ob", "}": "cb", "\\": "bs"})
_CHARACTERS: Mapping[str, str] = MappingProxyType({name: char for char, name in _LITERALS.items()})
_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_RETRY_LATER = frozenset({"ACCOUNT_THROTTLED", "TRANSIENT_FAILURE"})
# Statuses about the account or its set-up: every entry would get the same, so the send stops.
_ACCOUNT = frozenset({"MAIL_FROM_DOMAIN_NOT_VERIFIED", "CONFIGURATION_SET_NOT_FOUND", "TEMPLATE_NOT_FOUND",
                      "ACCOUNT_SUSPENDED", "INVALID_SENDING_POOL_NAME", "ACCOUNT_SENDING_PAUSED",
                      "CONFIGURATION_SET_SENDING_PAUSED"})
_QUOTA = "ACCOUNT_DAILY_QUOTA_EXCEEDED"
_INACTIVE = re.compile(r"suppression list|blacklist|suppressed", re.IGNORECASE)
_AUTH_CODES = frozenset({"UnrecognizedClientException", "InvalidSignatureException", "AccessDeniedException",
                         "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredTokenException",
                         "IncompleteSignatureException", "MissingAuthenticationTokenException"})
_HEADERS = policy.SMTP.clone(max_line_length=0)


def _literal(text: str) -> str:
    return _SYNTAX.sub(lambda m: "{{" + _LITERALS[m.group(0)] + "}}", text)


def header(name: str, value: str) -> str:
    """A header value as SES takes it: printable ASCII on one line, anything else as RFC 2047 words."""
    value = one_line(value)
    if value.isascii():
        return value
    return str(_HEADERS.header_factory(name, value).fold(policy=_HEADERS)).partition(":")[2].strip()


def mailbox(name: str, email: str) -> str:
    """`Name <address>` as SES takes it: the name RFC 2047-encoded when it is not ASCII, the domain in IDNA."""
    local, _, domain = email.rpartition("@")
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    name = one_line(name).strip()
    return formataddr((name, f"{local}@{domain}"), charset="utf-8") if name else f"{local}@{domain}"


class Template:
    """The issue once, as SES's inline template, and each recipient's values for it."""

    def __init__(self, envelope: Envelope) -> None:
        rendered = envelope.rendered
        self.numbered = Numbered(rendered.html, rendered.text, rendered.subject)

        def part(text: str, *, html: bool) -> str:
            pieces = PATTERN.split(text)  # literal, placeholder, literal, ...
            return "".join(_literal(piece) if i % 2 == 0 else "{{" + self.numbered.key(piece, html=html) + "}}"
                           for i, piece in enumerate(pieces))

        self.content = {"Subject": part(one_line(envelope.subject_prefix + rendered.subject), html=False),
                        "Html": part(rendered.html, html=True), "Text": part(rendered.text, html=False)}
        self.shared = json.dumps(dict(_CHARACTERS))

    def data(self, r: Recipient) -> str:
        """One recipient's ReplacementTemplateData: each placeholder for the HTML (escaped) and for text."""
        return json.dumps({**_CHARACTERS, **self.numbered.values(r.values)})


def _custom(values: dict[str, str]) -> list[dict[str, str]]:
    """Our custom arguments (issue, list, subscriber) as X-Newsletter-* headers: SES notifications carry
    the original headers back, which links each event to its ledger row."""
    return [{"Name": f"X-Newsletter-{key.title()}", "Value": header("X-Newsletter", value)}
            for key, value in values.items()]


def _tags(values: dict[str, str]) -> list[dict[str, str]]:
    """Values as SES message tags, leaving out any SES would refuse (tags allow only [A-Za-z0-9_-])."""
    return [{"Name": k, "Value": v} for k, v in values.items() if _TAG.match(k) and _TAG.match(v)]


class SesProvider:
    reports_events = True  # through SNS, from the configuration set's event destination

    def __init__(self, settings: SesSettings, *, max_in_flight: int = 8) -> None:
        self.settings = settings
        self.max_in_flight = max_in_flight
        self.per_call = max(1, min(settings.batch_size, MAX_ENTRIES))
        self.max_batch = self.per_call * CALLS_PER_BATCH
        self._client: BaseClient | None = None
        self._calls: ThreadPoolExecutor | None = None  # a batch's calls after its first
        self._lock = threading.Lock()
        self._template: tuple[Envelope, Template] | None = None
        self._quota: dict[str, float] | None = None  # GetAccount's SendQuota, read by prepare

    def _ses(self) -> BaseClient:
        """boto3's sesv2 client, made on first use under a lock (batches run in several threads)."""
        with self._lock:
            if self._client is None:
                self._client = make_client(self.settings, self.max_in_flight * CALLS_PER_BATCH)
            return self._client

    def _template_for(self, envelope: Envelope) -> Template:
        with self._lock:
            if self._template is None or self._template[0] is not envelope:
                self._template = (envelope, Template(envelope))
            return self._template[1]

    def params(self, envelope: Envelope, recipients: Sequence[Recipient]) -> dict[str, Any]:
        """The SendBulkEmail parameters of one call, exactly as they are sent."""
        template = self._template_for(envelope)
        shared = [{"Name": "List-Id", "Value": header("List-Id", envelope.list_id)},
                  {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"}]
        shared += _custom(envelope.custom_args)
        params: dict[str, Any] = {
            "FromEmailAddress": mailbox(envelope.from_name, envelope.from_email),
            "DefaultContent": {"Template": {"TemplateContent": template.content, "TemplateData": template.shared,
                                            "Headers": shared}},
            "BulkEmailEntries": [self._entry(envelope, template, r) for r in recipients],
        }
        if envelope.reply_to:
            params["ReplyToAddresses"] = [envelope.reply_to]
        if self.settings.configuration_set:
            params["ConfigurationSetName"] = self.settings.configuration_set
        tags = _tags(envelope.custom_args)
        if tags:
            params["DefaultEmailTags"] = tags
        return params

    def _entry(self, envelope: Envelope, template: Template, r: Recipient) -> dict[str, Any]:
        headers = _custom(r.custom_args)
        if r.unsubscribe_url:
            headers.append({"Name": "List-Unsubscribe", "Value": header("List-Unsubscribe",
                                                                        list_unsubscribe(envelope, r.unsubscribe_url))})
        entry: dict[str, Any] = {"Destination": {"ToAddresses": [mailbox(r.name.replace('"', ""), r.email)]},
                                 "ReplacementEmailContent": {"ReplacementTemplate": {
                                     "ReplacementTemplateData": template.data(r)}},
                                 "ReplacementHeaders": headers}
        tags = _tags(r.custom_args)
        if tags:
            entry["ReplacementTags"] = tags
        return entry

    def check(self, envelope: Envelope) -> None:
        """Refuse an issue SES can never take as an inline template, whoever it goes to: before anything is sent."""
        check_size(len(json.dumps(self._template_for(envelope).content).encode()), MAX_TEMPLATE_BYTES, "SES")

    def preview(self, envelope: Envelope, recipients: Sequence[Recipient], limit: int) -> list[Preview]:
        """The first `limit` messages as `.eml` files, and the first call's parameters as JSON."""
        return previews(envelope, recipients, limit, self.per_call, "ses",
                        lambda batch: json.dumps(self.params(envelope, batch), indent=1).encode())

    def send(self, envelope: Envelope, recipients: Sequence[Recipient], pacer: Pacer | None = None) -> list[Result]:
        """Results for the recipients handed over; none for those left pending (stopping, quota).

        A batch is up to CALLS_PER_BATCH calls of `batch_size`, made at once: SES's 50 per call would
        otherwise cost a ledger claim per 50 recipients."""
        pacer = pacer or Pacer()
        results: list[Result] = []
        todo = []
        for r in recipients:
            if r.email.rpartition("@")[0].isascii():
                todo.append(r)
            else:
                results.append(Result(r.key, "failed", error="SES cannot send to a mailbox whose local part is "
                                                             "not ASCII (no SMTPUTF8)"))
        chunks = [todo[i:i + self.per_call] for i in range(0, len(todo), self.per_call)]
        calls = [self._pool().submit(self._send_call, envelope, chunk, pacer) for chunk in chunks[1:]]
        stop: ProviderError | None = None
        if chunks:  # the first call in this thread, the others alongside
            stop = _gather(functools.partial(self._send_call, envelope, chunks[0], pacer), results, stop)
        for call in calls:
            stop = _gather(call.result, results, stop)
        if stop is not None:
            stop.partial = results
            raise stop
        return results

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._calls is None:
                self._calls = ThreadPoolExecutor(max_workers=self.max_in_flight * (CALLS_PER_BATCH - 1),
                                                 thread_name_prefix="ses-call")
            return self._calls

    def _send_call(self, envelope: Envelope, todo: list[Recipient], pacer: Pacer) -> list[Result]:
        """One SendBulkEmail call's recipients: sent, entries SES asks to have again sent again after a pause
        (then deferred), and whatever the call's answer says of the others."""
        results: list[Result] = []
        try:
            for attempt in range(self.settings.max_retries):
                call = functools.partial(self._attempt, self.params(envelope, todo))
                entries = with_retries(call, pacer, provider="SES", tries=self.settings.max_retries,
                                       base=self.settings.retry_backoff)
                if entries is None:
                    return results  # stopping: the rest goes back to pending
                todo = self._sort(todo, entries, results)
                if not todo:
                    return results
                pacer.pause(backoff(self.settings.retry_backoff, attempt))
        except MaybeSent as exc:
            return results + [Result(r.key, "unknown", error=str(exc)) for r in todo]
        except ProviderError as exc:
            exc.partial = results
            raise
        wait = backoff(self.settings.retry_backoff, self.settings.max_retries)
        return results + [Result(r.key, "deferred", error="SES kept throttling this recipient", retry_in=wait)
                          for r in todo]

    def _sort(self, batch: list[Recipient], entries: list[Any], results: list[Result]) -> list[Recipient]:
        """Add the results SES gave for `batch` to `results`; the recipients to try again. Raises to stop."""
        again: list[Recipient] = []
        stop: ProviderError | None = None
        for index, r in enumerate(batch):
            entry = entries[index] if index < len(entries) and isinstance(entries[index], dict) else None
            status = str(entry.get("Status", "")) if entry else ""
            said = str(entry.get("Error", "")) if entry else ""
            if entry is None:
                results.append(Result(r.key, "unknown", error="SES gave no result for this recipient"))
            elif status == "SUCCESS":
                results.append(Result(r.key, "sent", message_id=str(entry.get("MessageId", ""))))
            elif status in _RETRY_LATER:
                again.append(r)
            elif status == _QUOTA:
                stop = stop or self._quota_used_up()
            elif status in _ACCOUNT:
                stop = stop or ProviderRejected(f"SES refused the message for this account: {status} ({said}); fix "
                                                f"it at SES, then run send again: nobody was marked failed")
            else:
                results.append(Result(r.key, "failed", error=f"SES {status}: {said}"[:300],
                                      inactive=status == "MESSAGE_REJECTED" and bool(_INACTIVE.search(said))))
        if stop is not None:
            raise stop
        return again

    def _quota_used_up(self) -> ProviderUnavailable:
        quota = self._quota or {}
        limit = f" of {quota['Max24HourSend']:,.0f}" if quota.get("Max24HourSend", -1) >= 0 else ""
        back = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=24)).strftime("%Y-%m-%d %H:%M UTC")
        return ProviderUnavailable(f"SES's 24-hour sending quota{limit} is used up: the rest stays pending; the quota "
                                   f"comes back as the rolling 24 hours pass (all of it by {back}), then run send "
                                   f"again")

    def prepare(self, pacer: Pacer) -> None:
        """Read the account's quota (GetAccount) and keep the pacer under its rate; stop before
        anything is sent when sending is paused or the day's quota is already used up."""
        if not self.settings.read_quota:
            return
        self._quota = quota = self._read_quota()
        if quota.get("SendingEnabled") == 0:
            raise ProviderRejected("SES says sending is paused for this account (GetAccount: SendingEnabled false); "
                                   "nothing was sent")
        if 0 <= quota.get("Max24HourSend", -1) <= quota.get("SentLast24Hours", 0):
            raise self._quota_used_up()
        if quota.get("MaxSendRate", 0) > 0:
            pacer.cap(quota["MaxSendRate"])

    def _read_quota(self) -> dict[str, float]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            account = self._ses().get_account()
        except (BotoCoreError, ClientError):
            return {}  # without the figures: SES's own answers still slow the send down
        found = {k: float(v) for k, v in account.get("SendQuota", {}).items() if isinstance(v, int | float)}
        if "SendingEnabled" in account:
            found["SendingEnabled"] = float(bool(account["SendingEnabled"]))
        return found

    def _attempt(self, params: dict[str, Any]) -> list[Any]:
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            HTTPClientError,
            NoCredentialsError,
        )

        try:
            answer = self._ses().send_bulk_email(**params)
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise Retry(f"connection failed: {exc}") from None
        except HTTPClientError as exc:
            raise MaybeSent(f"no usable answer from SES after the request was sent ({type(exc).__name__}: "
                            f"{exc})") from None
        except NoCredentialsError:
            raise ProviderAuthError(_NO_CREDENTIALS) from None
        except ClientError as exc:
            raise self._refusal(exc.response) from None
        entries = answer.get("BulkEmailEntryResults")
        if not isinstance(entries, list):
            raise MaybeSent("SES answered without a result per entry")
        return entries

    def _refusal(self, response: dict[str, Any]) -> Exception:
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        code = str(response.get("Error", {}).get("Code", ""))
        said = str(response.get("Error", {}).get("Message", ""))
        if "quota" in said.lower() and (status == 429 or "Throttl" in code or code == "LimitExceededException"):
            return self._quota_used_up()
        if status == 429 or status >= 500 or "Throttl" in code:
            return Retry(f"{status} {code}: {said}", status=status)
        if code in _AUTH_CODES or status in (401, 403):
            return ProviderAuthError(f"SES refused the credentials ({code}: {said}); check the AWS credentials "
                                     f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and [ses] region "
                                     f"{self.settings.region}", status=status)
        return ProviderRejected(f"SES refused the request: {code}: {said}; nothing was marked failed", status=status)

    def close(self) -> None:
        with self._lock:
            if self._calls is not None:
                self._calls.shutdown(wait=True)
                self._calls = None
            if self._client is not None:
                self._client.close()
                self._client = None


def _gather(outcome: Callable[[], list[Result]], results: list[Result],
            stop: ProviderError | None) -> ProviderError | None:
    """Add one call's results to the batch's; the first error that stops the send is kept, with what
    its call did handle, so the batch's other calls are all recorded first."""
    try:
        results.extend(outcome())
    except ProviderError as exc:
        results.extend(exc.partial)
        return stop or exc
    return stop


_NO_CREDENTIALS = ("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or "
                   "run where a role provides them)")


def make_client(settings: SesSettings, connections: int) -> BaseClient:
    """A sesv2 client of its own session (no process-wide state), with botocore's retries off: a retry
    after a lost answer could mail a batch twice, so this module decides what is tried again. Its check
    of every call's parameters against the model is off too: it was a third of the sender's CPU per
    call, the parameters are built here and the tests validate them against the same model, and SES
    checks them again."""
    import boto3
    from botocore.config import Config as BotoConfig

    session = boto3.session.Session()
    config = BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"}, max_pool_connections=connections,
                        connect_timeout=min(10.0, settings.timeout), read_timeout=settings.timeout,
                        user_agent_extra="newsletter", parameter_validation=False)
    return session.client("sesv2", region_name=settings.region, endpoint_url=settings.endpoint_url or None,
                          config=config)


def check_credentials() -> None:
    """ProviderAuthError before a real send when the AWS chain has no credentials at all."""
    import boto3

    if boto3.session.Session().get_credentials() is None:
        raise ProviderAuthError(_NO_CREDENTIALS)
