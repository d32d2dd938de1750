"""A fake Amazon SES v2 API on 127.0.0.1 (`POST /v2/email/outbound-bulk-emails`, `GET /v2/email/account`).

It checks requests the way SES does: the SigV4 `Authorization` header is recomputed from the
request with the test's secret key (403 `InvalidSignatureException` when it differs, 403
`UnrecognizedClientException` for another key id), and every body is validated against botocore's
own service model for `sesv2` (400 `BadRequestException` with botocore's report), then against
what the model does not say: a From address, 1 to 50 entries, template data that is a JSON
object, header names and values SES takes, tag characters. Each entry's message is then rendered
the way SES renders an inline template, simple `{{name}}` substitution only: a variable without a
value, or any other `{{`, is a rendering failure (SES accepts such a message and never delivers
it). Per-entry statuses can be scripted (a refusal for one address, throttling, a daily quota).

    python tests/fake_ses.py --key K   # K is the access key id and the secret; prints the port, serves
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import re
import sys
import uuid
from collections import deque
from email.utils import parseaddr
from typing import Any
from urllib.parse import quote

from botocore.loaders import Loader
from botocore.model import ServiceModel
from botocore.validate import ParamValidator

try:
    from .fake_service import FakeService
except ImportError:  # run as a script by the benchmarks
    from fake_service import FakeService  # type: ignore[no-redef]

ACCESS_KEY, SECRET_KEY = "AKIDEXAMPLETEST", "fake-secret-access-key"
MAX_ENTRIES = 50
_MODEL = ServiceModel(Loader().load_service_model("sesv2", "service-2"), "sesv2")
_BULK = _MODEL.operation_model("SendBulkEmail").input_shape
_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_VARIABLE = re.compile(r"\{\{([A-Za-z0-9_]+)\}\}")
_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                   r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")
_ERRORS = {429: "TooManyRequestsException", 500: "InternalFailure", 503: "ServiceUnavailable",
           400: "BadRequestException"}


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def error(status: int, code: str, message: str) -> tuple[int, Any, dict[str, str]]:
    """An error as SES's rest-json protocol gives it: the code in a header and in the body."""
    return status, {"__type": code, "message": message}, {"x-amzn-ErrorType": code}


def render(text: str, data: dict[str, Any]) -> tuple[str, str]:
    """SES's simple substitution of one part; the second value is why it cannot be rendered, or ""."""
    missing = sorted({name for name in _VARIABLE.findall(text) if name not in data})
    if missing:
        return text, f"Attribute '{missing[0]}' is not present in the rendering data."
    out = _VARIABLE.sub(lambda m: str(data[m.group(1)]), text)
    leftover = _VARIABLE.sub("", text)
    if "{{" in leftover or "}}}" in text or "\\{{" in text:
        return out, "The template has a tag SES cannot render."
    return out, ""


class FakeSes(FakeService):
    def __init__(self, *, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, region: str = "us-east-1",
                 latency: float = 0.0, record_bodies: bool = True, max_send_rate: float = 1000.0,
                 max_24_hour_send: float = -1) -> None:
        super().__init__(latency=latency, record_bodies=record_bodies)
        self.access_key, self.secret_key, self.region = access_key, secret_key, region
        self.max_send_rate, self.max_24_hour_send = max_send_rate, max_24_hour_send
        self.sent_24h = 0
        self.account_reads = 0
        self.statuses: dict[str, tuple[str, str]] = {}  # address -> (entry status, error) every time
        self.entry_script: deque[str] = deque()  # statuses for the next entries, whoever they are for
        self.messages: list[dict[str, Any]] = []  # per recipient: to, subject, html, text, headers, tags
        self.render_failures: list[tuple[str, str]] = []  # (address, why)
        self.bodies: list[dict[str, Any]] = []  # every accepted request body

    # -- the checks every call gets -------------------------------------------------------------

    def _unsigned(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, Any, dict[str, str]] | None:
        """None when the request is signed with SigV4 by the test's key, as SES checks it; else the refusal."""
        found = _AUTH.match(headers.get("Authorization", ""))
        if found is None:
            return error(403, "IncompleteSignatureException", "Authorization header requires SigV4 fields")
        key_id, day, region, service, signed, signature = found.groups()
        if key_id != self.access_key:
            return error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        stamp = headers.get("X-Amz-Date", "")
        try:
            at = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return error(403, "IncompleteSignatureException", "X-Amz-Date is missing or malformed")
        if abs((dt.datetime.now(dt.UTC) - at).total_seconds()) > 300 or day != stamp[:8]:
            return error(403, "InvalidSignatureException", "Signature expired")
        if (region, service) != (self.region, "ses") or "host" not in signed.split(";"):
            return error(403, "InvalidSignatureException", f"Credential should be scoped to {self.region}/ses")
        canonical = "\n".join([
            method, quote(path.partition("?")[0], safe="/~"), path.partition("?")[2],
            "".join(f"{name}:{' '.join(str(headers.get(name, '')).split())}\n" for name in signed.split(";")),
            signed, hashlib.sha256(raw).hexdigest()])
        scope = f"{day}/{region}/{service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = _hmac(_hmac(_hmac(_hmac(f"AWS4{self.secret_key}".encode(), day), region), service), "aws4_request")
        if not hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature):
            return error(403, "InvalidSignatureException", "The request signature we calculated does not match the "
                                                           "signature you provided.")
        return None

    def answer_get(self, path: str, headers: Any) -> tuple[Any, ...] | None:
        if path != "/v2/email/account":
            return None
        refused = self._unsigned("GET", path, headers, b"")
        if refused:
            return refused
        with self.lock:
            self.account_reads += 1
            sent = self.sent_24h
        return 200, {"SendingEnabled": True, "ProductionAccessEnabled": True, "EnforcementStatus": "HEALTHY",
                     "SendQuota": {"Max24HourSend": self.max_24_hour_send, "MaxSendRate": self.max_send_rate,
                                   "SentLast24Hours": sent}}

    def answer(self, path: str, headers: Any, raw: bytes) -> tuple[Any, ...] | None:
        if path != "/v2/email/outbound-bulk-emails":
            return error(404, "NotFoundException", f"no operation at {path}")
        refused = self._unsigned("POST", path, headers, raw)
        if refused:
            return refused
        scripted, drop = self.take()
        answer = self.scripted(scripted)
        if answer is not None:
            status, body = answer
            code = _ERRORS.get(status, "BadRequestException")
            return status, {"__type": code, "message": body.get("message", "")}, {"x-amzn-ErrorType": code}
        try:
            body = json.loads(raw)
        except ValueError:
            return error(400, "SerializationException", "the body is not JSON")
        report = ParamValidator().validate(body, _BULK)
        if report.has_errors():
            return error(400, "BadRequestException", report.generate_report())
        problem = self._check(body)
        if problem:
            return error(400, "BadRequestException", problem)
        results = self._accept(body)
        return None if drop else (200, {"BulkEmailEntryResults": results})

    def _check(self, body: dict[str, Any]) -> str:
        template = body["DefaultContent"].get("Template", {})
        content = template.get("TemplateContent")
        if not body.get("FromEmailAddress"):
            return "Missing required FromEmailAddress"
        if not content or not content.get("Subject") or not (content.get("Html") or content.get("Text")):
            return "An inline template needs a subject and an HTML or text part"
        entries = body["BulkEmailEntries"]
        if not 1 <= len(entries) <= MAX_ENTRIES:
            return f"BulkEmailEntries must have 1 to {MAX_ENTRIES} entries, not {len(entries)}"
        datas = [template.get("TemplateData", "{}")] + [
            e.get("ReplacementEmailContent", {}).get("ReplacementTemplate", {}).get("ReplacementTemplateData", "{}")
            for e in entries]
        for data in datas:
            try:
                if not isinstance(json.loads(data), dict):
                    return "Template data must be a JSON object"
            except ValueError:
                return "Unable to parse template data (invalid JSON)."
        headers = template.get("Headers", []) + [h for e in entries for h in e.get("ReplacementHeaders", [])]
        for header in headers:
            name, value = header["Name"], header["Value"]
            if not re.fullmatch(r"[!-9;-~]{1,126}", name) or len(value) > 995 or "\r" in value or "\n" in value:
                return f"Invalid header {name!r}"
        tags = body.get("DefaultEmailTags", []) + [t for e in entries for t in e.get("ReplacementTags", [])]
        if any(not _TAG.match(t["Name"]) or not _TAG.match(t["Value"]) for t in tags):
            return "Tag names and values may contain only ASCII letters, numbers, underscores and dashes"
        if any(not e["Destination"].get("ToAddresses") for e in entries):
            return "Each entry needs at least one To address"
        return ""

    def _status(self, address: str) -> tuple[str, str]:
        with self.lock:
            if self.entry_script:
                return self.entry_script.popleft(), "scripted"
            if address.lower() in self.statuses:
                return self.statuses[address.lower()]
            if 0 <= self.max_24_hour_send <= self.sent_24h:
                return "ACCOUNT_DAILY_QUOTA_EXCEEDED", "Daily message quota exceeded."
            self.sent_24h += 1
        return "SUCCESS", ""

    def _accept(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        template = body["DefaultContent"]["Template"]
        content = template["TemplateContent"]
        default = json.loads(template.get("TemplateData", "{}"))
        results = []
        for entry in body["BulkEmailEntries"]:
            address = parseaddr(entry["Destination"]["ToAddresses"][0])[1]
            status, why = self._status(address)
            if status != "SUCCESS":
                results.append({"Status": status, "Error": why})
                continue
            message_id = f"0100{uuid.uuid4().hex}-000000"
            results.append({"Status": "SUCCESS", "MessageId": message_id})
            with self.lock:
                self.received.append(address.lower())
            if self.record_bodies:
                self._record(body, entry, content, default, template, address, message_id)
        if self.record_bodies:
            with self.lock:
                self.bodies.append(body)
        return results

    def _record(self, body: dict[str, Any], entry: dict[str, Any], content: dict[str, str], default: dict[str, Any],
                template: dict[str, Any], address: str, message_id: str) -> None:
        replacement = entry.get("ReplacementEmailContent", {}).get("ReplacementTemplate", {})
        data = {**default, **json.loads(replacement.get("ReplacementTemplateData", "{}"))}
        parts, failures = {}, []
        for part in ("Subject", "Html", "Text"):
            parts[part], why = render(content.get(part, ""), data)
            if why:
                failures.append(why)
        headers = {h["Name"]: h["Value"] for h in template.get("Headers", [])}
        headers.update({h["Name"]: h["Value"] for h in entry.get("ReplacementHeaders", [])})
        tags = {t["Name"]: t["Value"] for t in body.get("DefaultEmailTags", []) + entry.get("ReplacementTags", [])}
        with self.lock:
            self.render_failures.extend((address, why) for why in failures[:1])
            self.messages.append({"to": address, "to_header": entry["Destination"]["ToAddresses"][0],
                                  "from": body["FromEmailAddress"], "subject": parts["Subject"],
                                  "html": parts["Html"], "text": parts["Text"], "headers": headers, "tags": tags,
                                  "message_id": message_id, "reply_to": body.get("ReplyToAddresses", []),
                                  "configuration_set": body.get("ConfigurationSetName", "")})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", default=ACCESS_KEY, help="the access key id, and its secret")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--max-send-rate", type=float, default=100_000.0, help="GetAccount's MaxSendRate")
    args = parser.parse_args()
    FakeSes(access_key=args.key, secret_key=args.key, latency=args.latency, record_bodies=False,
            max_send_rate=args.max_send_rate).serve()


if __name__ == "__main__":
    sys.exit(main())
