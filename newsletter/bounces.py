"""What comes back to the bounce address, read and classified with the standard library.

RFC 3464 delivery status notifications (`multipart/report; report-type=delivery-status`, one
finding per recipient from its `Action`, `Status` and `Diagnostic-Code`), RFC 5965 ARF complaint
reports (`report-type=feedback-report`), RFC 3834 auto-replies and challenge-responses, and the
plain-text bounces of MTAs that send no report (qmail, older Exim and Sendmail). `CLASSES` is the
one table of what a status means. A refusal that is the sender's own setup (DMARC, SPF or DKIM, an
unauthenticated message, a blocklisted IP, relaying, content) is `sender` whatever its code says:
it must never suppress a recipient, or one DNS mistake would empty a list.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser

from .statuses import BounceClass

# (status pattern, class, what it means), first match wins; a 5.x.x not listed is soft: counted, and
# suppressed only after [bounces] soft_limit of them.
CLASSES: tuple[tuple[re.Pattern[str], BounceClass, str], ...] = tuple(
    (re.compile(pattern), kind, meaning) for pattern, kind, meaning in (
        (r"^5\.7\.\d+$", BounceClass.SENDER, "refused by the receiving server's security or policy rules"),
        (r"^5\.1\.[78]$", BounceClass.SENDER, "the sender's address was refused"),
        (r"^5\.1\.\d+$", BounceClass.HARD, "the address or its domain does not exist"),
        (r"^5\.2\.1$", BounceClass.HARD, "the mailbox is disabled"),
        (r"^5\.2\.2$", BounceClass.SOFT, "the mailbox is full"),
        (r"^5\.(2\.3|3\.4)$", BounceClass.SENDER, "the message is larger than the receiving side takes"),
        (r"^5\.[56]\.\d+$", BounceClass.SENDER, "the sending server's protocol or the message's format"),
        (r"^5\.\d+\.\d+$", BounceClass.SOFT, "a permanent failure with no clear cause"),
        (r"^4\.\d+\.\d+$", BounceClass.SOFT, "a temporary failure"),
    ))
# Words of a refusal that is about the sender, whatever the status code says.
SENDER_SIGNS = re.compile(
    r"dmarc|\bspf\b|dkim|unauthenticated|not authenticated|authentication (?:failed|required)|"
    r"block ?list|black ?list|spamhaus|barracuda|spamcop|\b(?:rbl|dnsbl)\b|blocked using|listed (?:at|on|in)|"
    r"reputation|relay(?:ing)? (?:access )?denied|not permitted to relay|unable to relay|relay not permitted|"
    r"banned sender|sending ip|sender ip|your ip|policy reasons|\bspam\b|content rejected|virus", re.IGNORECASE)
HARD_SIGNS = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|does ?n[o']t exist|not exist|unknown recipient|"
    r"invalid (?:recipient|mailbox|address)|mailbox (?:unavailable|not found)|recipient not found|"
    r"address rejected|no mailbox|account (?:has been )?disabled|host (?:or domain name )?not found", re.IGNORECASE)
FULL_SIGNS = re.compile(r"over ?quota|quota exceeded|mailbox (?:is )?full|insufficient (?:storage|space)",
                        re.IGNORECASE)
STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")  # an enhanced status code (RFC 3463)
_BASIC = re.compile(r"\b([45])(\d\d)[ -]")
_ADDRESS = re.compile(r"<?([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?")
_AUTO_SUBJECT = re.compile(
    r"out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response)|autoreply|vacation|"
    r"abwesenheit|absence|away from (?:my|the) (?:desk|office)", re.IGNORECASE)
_CHALLENGE = re.compile(
    r"please confirm (?:your|that)|verify (?:your|that) (?:message|email|you)|awaiting (?:your )?(?:confirmation|"
    r"verification)|is this really you|protecting (?:myself|my inbox) from spam|approval (?:required|needed)|"
    r"challenge", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status notification|failure|has failed)|failure notice|returned mail|"
    r"mail delivery (?:failed|system)|could not be delivered|delivery problem", re.IGNORECASE)
_DAEMON = re.compile(r"mailer-daemon|postmaster|mail delivery (?:system|subsystem)", re.IGNORECASE)
_PERMANENT_WORDS = re.compile(r"permanent|fatal|given up|failed permanently|could not be delivered", re.IGNORECASE)
_TEMPORARY_WORDS = re.compile(r"temporar|delayed|will (?:keep|continue) trying|retry", re.IGNORECASE)
_NOT_SPAM = ("not-spam",)


@dataclass(frozen=True)
class Finding:
    """One recipient's outcome, as the report gave it."""

    kind: BounceClass
    email: str  # the recipient, as the report names it ("" when it names none)
    status: str = ""  # the enhanced status code, e.g. "5.1.1"
    diagnostic: str = ""  # the receiving server's words
    meaning: str = ""  # what the class table says of the status


@dataclass(frozen=True)
class Report:
    """One message from the bounce mailbox, read."""

    kind: BounceClass  # what the message is, as a whole (the first finding's class for a report)
    findings: tuple[Finding, ...]
    message_id: str  # the report's own Message-ID ("" when it has none)
    headers: str  # every header of the report and of the copy it returned, to look for our VERP and ids
    returned: dict[str, str]  # the returned copy's X-Newsletter-Issue / -List / -Subscriber values, by key
    why: str = ""  # for UNKNOWN: why it was not understood


def classify(status: str, diagnostic: str, action: str = "failed", default: str = "") -> tuple[BounceClass, str, str]:
    """(class, status, meaning) of one recipient's failure, from the one table. The report's Status
    comes first, then a code in the server's words, then `default` (what the report says as a whole)."""
    if action.lower() == "delayed":
        return BounceClass.SOFT, status or "4.0.0", "delivery is delayed"
    found = STATUS_CODE.search(status) or STATUS_CODE.search(diagnostic)
    code = ".".join(found.groups()) if found else _from_basic(diagnostic, status) or default
    if SENDER_SIGNS.search(diagnostic):
        return BounceClass.SENDER, code, "refused for the sender's setup, not the recipient's address"
    if code in ("5.0.0", "") and HARD_SIGNS.search(diagnostic):
        return BounceClass.HARD, code or "5.0.0", "the address does not exist"
    if code.startswith("5.") and FULL_SIGNS.search(diagnostic):
        return BounceClass.SOFT, code, "the mailbox is full"
    for pattern, kind, meaning in CLASSES:
        if pattern.match(code):
            return kind, code, meaning
    return BounceClass.SOFT, code or "4.0.0", "no status given"


def _from_basic(diagnostic: str, status: str) -> str:
    """An enhanced code from a basic SMTP reply (550 → 5.0.0), or from the words around it."""
    basic = _BASIC.search(diagnostic)
    if basic:
        return f"{basic.group(1)}.0.0"
    if status[:1] in "45" and status:
        return f"{status[0]}.0.0"
    if _TEMPORARY_WORDS.search(diagnostic):
        return "4.0.0"
    return "5.0.0" if _PERMANENT_WORDS.search(diagnostic) else ""


def _text(value: object) -> str:
    """A header value as text, encoded words decoded; never raises."""
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
        return str(value)


def _address(value: str) -> str:
    """The address in a report field such as `rfc822; user@example.com`."""
    found = _ADDRESS.search(value.partition(";")[2] or value)
    return found.group(1) if found else ""


def _body(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload()) if not part.is_multipart() else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset
        return payload.decode("latin-1")


def _fields(part: Message) -> list[Message]:
    """The blocks of a delivery-status or feedback-report part: the per-message one, then per recipient."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [p for p in payload if isinstance(p, Message)]
        if len(blocks) == 1 and isinstance(blocks[0].get_payload(), str):  # parsed as one message (RFC 6533's
            return blocks[:1] + _blocks(str(blocks[0].get_payload()))    # global type): its body holds the rest
        if blocks:
            return blocks
    return _blocks(_body(part))


def _blocks(text: str) -> list[Message]:
    text = text.replace("\r\n", "\n")
    return [HeaderParser().parsestr(block.strip() + "\n") for block in re.split(r"\n\s*\n", text) if block.strip()]


def _returned(message: Message) -> Message | None:
    """The copy of our message a report carries back (whole, or its headers only)."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
        if kind in ("text/rfc822-headers", "message/global-headers"):
            return HeaderParser().parsestr(_body(part))
    return None


def read(raw: bytes) -> Report:
    """The report in one raw message; UNKNOWN (with why) for anything no rule understands. Never raises:
    the bounce address takes mail from anyone, and one message the parser trips on must not stop the
    mailbox from being read (a person reads it instead)."""
    try:
        return _read(raw)
    except Exception as exc:  # noqa: BLE001 - see above
        return Report(BounceClass.UNKNOWN, (), "", "", {}, f"the message could not be read ({type(exc).__name__})")


def _read(raw: bytes) -> Report:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    returned = _returned(message)
    headers = "\n".join(f"{k}: {_text(v)}" for k, v in message.items())
    if returned is not None:
        headers += "\n" + "\n".join(f"{k}: {_text(v)}" for k, v in returned.items())
    ours = {key: _text(returned.get(f"X-Newsletter-{key.title()}", "")).strip() if returned is not None else ""
            for key in ("issue", "list", "subscriber")}
    message_id = _text(message.get("Message-ID", "")).strip().strip("<>")
    kind, findings, why = _findings(message, returned)
    return Report(kind, tuple(findings), message_id, headers, ours, why)


def _findings(message: Message, returned: Message | None) -> tuple[BounceClass, list[Finding], str]:
    report_type = (message.get_param("report-type", header="content-type") or "") if message.is_multipart() else ""
    report_type = str(report_type).lower()
    if message.get_content_type() == "multipart/report" and report_type == "feedback-report":
        return _complaint(message, returned)
    if message.get_content_type() == "multipart/report" and report_type == "delivery-status":
        found = _delivery_status(message)
        if found:
            return found[0].kind, found, ""
    found = _plain_bounce(message)  # before auto-replies: MTAs mark their bounces Auto-Submitted too
    if found:
        return found[0].kind, found, ""
    if _is_auto_reply(message):
        return BounceClass.AUTO_REPLY, [], ""
    return BounceClass.UNKNOWN, [], "no delivery report, complaint report or auto-reply was recognised"


def _delivery_status(message: Message) -> list[Finding]:
    findings = []
    for part in message.walk():
        if part.get_content_type() not in ("message/delivery-status", "message/global-delivery-status"):
            continue
        for block in _fields(part)[1:] or _fields(part):
            email_ = _address(_text(block.get("Final-Recipient") or block.get("Original-Recipient") or ""))
            action = _text(block.get("Action", "failed")).strip().lower()
            if not email_ or action in ("delivered", "relayed", "expanded"):
                continue
            diagnostic = " ".join(_text(block.get("Diagnostic-Code", "")).partition(";")[2].split()) or \
                " ".join(_text(block.get("Diagnostic-Code", "")).split())
            kind, status, meaning = classify(_text(block.get("Status", "")).strip(), diagnostic, action)
            findings.append(Finding(kind, email_, status, diagnostic[:500], meaning))
    return findings


def _complaint(message: Message, returned: Message | None) -> tuple[BounceClass, list[Finding], str]:
    fields: Message | None = None
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            blocks = _fields(part)
            fields = blocks[0] if blocks else None
    feedback = _text(fields.get("Feedback-Type", "abuse") if fields is not None else "abuse").strip().lower()
    if feedback in _NOT_SPAM:
        return BounceClass.AUTO_REPLY, [], ""  # a "this is not spam" report: nothing to act on
    who = _address(_text(fields.get("Original-Rcpt-To", ""))) if fields is not None else ""
    if not who and returned is not None:
        who = _address(_text(returned.get("To", "")))
    return BounceClass.COMPLAINT, [Finding(BounceClass.COMPLAINT, who, "", f"feedback type {feedback}",
                                           "the recipient reported the message as spam")], ""


def _is_auto_reply(message: Message) -> bool:
    """RFC 3834's Auto-Submitted and the common vendor headers, or an out-of-office or challenge subject."""
    auto = _text(message.get("Auto-Submitted", "")).strip().lower()
    if auto and auto != "no":
        return True
    if any(message.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Autoresponse", "X-Boxbe-Screening")):
        return True
    if _text(message.get("Precedence", "")).strip().lower() == "auto_reply":
        return True
    subject = _text(message.get("Subject", ""))
    return bool(_AUTO_SUBJECT.search(subject) or _CHALLENGE.search(subject))


def _plain_bounce(message: Message) -> list[Finding]:
    """qmail's, older Exim's and Sendmail's text bounces: an address, then the server's words."""
    sender, subject = _text(message.get("From", "")), _text(message.get("Subject", ""))
    if not (_DAEMON.search(sender) or _BOUNCE_SUBJECT.search(subject)):
        return []
    text = "\n".join(_body(part) for part in message.walk()
                     if part.get_content_type() == "text/plain" and not part.get_filename())
    text = text.split("--- Below this line is a copy of the message", 1)[0]
    text = re.split(r"\n-+ ?(?:Original message|This is a copy of the message)", text, maxsplit=1,
                    flags=re.IGNORECASE)[0]
    default = "5.0.0" if _PERMANENT_WORDS.search(text) and not _TEMPORARY_WORDS.search(text[:400]) else "4.0.0"
    findings, seen = [], set()
    lines = text.replace("\r\n", "\n").split("\n")
    for index, line in enumerate(lines):
        found = _ADDRESS.search(line)
        if not found or found.group(1).lower() in seen or _DAEMON.search(line):
            continue
        around = " ".join(" ".join(lines[index:index + 6]).split())
        if not (_BASIC.search(around) or STATUS_CODE.search(around) or re.search(r"<[^>]+>:\s*$", line)
                or line.startswith(("  ", "\t"))):
            continue
        seen.add(found.group(1).lower())
        diagnostic = around[len(found.group(0)):].strip(" :()")[:500]
        kind, status, meaning = classify("", diagnostic, default=default)
        findings.append(Finding(kind, found.group(1), status, diagnostic, meaning))
    return findings
