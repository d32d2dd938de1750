"""The complete MIME message for one recipient: what SMTP sends and what a dry run shows.

Built with the standard `email` package: multipart/alternative with the text part first, then
the HTML, each quoted-printable; the per-recipient headers a mass mailing needs (List-Id,
List-Unsubscribe with its one-click companion, Feedback-ID and CFBL-Address for complaint
feedback loops, and X-Newsletter-Issue/-List/-Subscriber, which a bounce's returned copy
carries back).
"""

from __future__ import annotations

import binascii
import email.policy
from collections.abc import Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..placeholders import fill, one_line
from .base import Envelope, Preview, Recipient, list_unsubscribe


def _header(value: str) -> str:
    return one_line(value).strip()


# CRLF line ends (smtplib does not convert bytes), and headers folded only past RFC 5322's hard
# limit: a folded List-Unsubscribe would be turned into an encoded word that clients cannot use.
POLICY = email.policy.SMTP.clone(max_line_length=998)
# For an address that is not ASCII (RFC 6532): headers in UTF-8, never an encoded word in an address.
UTF8_POLICY = email.policy.SMTPUTF8.clone(max_line_length=998)


def needs_smtputf8(envelope: Envelope, recipient: Recipient) -> bool:
    """True when an address (not just a name) is not ASCII: the message needs SMTPUTF8 to travel."""
    return not (recipient.email.isascii() and envelope.from_email.isascii())


def _to(recipient: Recipient, utf8: bool) -> Address | str:
    """The To header. With a non-ASCII address, the email package of Python 3.11 cannot fold an
    Address that has a display name (NonASCIILocalPartDefect), so the header is written as text:
    the name as a quoted string, which RFC 6532 lets carry UTF-8."""
    name = _header(recipient.name)
    if not name:
        return recipient.email
    if not utf8:
        return Address(display_name=name, addr_spec=recipient.email)
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{recipient.email}>'


def build_message(envelope: Envelope, recipient: Recipient) -> EmailMessage:
    """The complete message for one recipient, exactly as it goes over SMTP."""
    rendered = envelope.rendered
    msg = EmailMessage(policy=UTF8_POLICY if needs_smtputf8(envelope, recipient) else POLICY)
    msg["Subject"] = _header(envelope.subject_prefix + fill(rendered.subject, recipient.values, html_escape=False))
    msg["From"] = envelope.from_header
    msg["To"] = _to(recipient, msg.policy is UTF8_POLICY)
    if envelope.reply_to:
        msg["Reply-To"] = envelope.reply_to
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    domain = envelope.from_email.rpartition("@")[2] or None
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["List-Id"] = _header(envelope.list_id)
    if recipient.unsubscribe_url:  # transactional mail (a confirmation request) has none
        msg["List-Unsubscribe"] = list_unsubscribe(envelope, recipient.unsubscribe_url)
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if envelope.feedback_id:
        msg["Feedback-ID"] = _header(envelope.feedback_id)
    if envelope.complaint_address:
        msg["CFBL-Address"] = f"{envelope.complaint_address}; report=arf"
        msg["CFBL-Feedback-ID"] = _header(envelope.feedback_id)
    for key, value in {**envelope.custom_args, **recipient.custom_args}.items():  # read back from returned copies
        msg[f"X-Newsletter-{key.title()}"] = _header(value)
    msg["MIME-Version"] = "1.0"
    msg.make_alternative()
    msg.attach(_quoted_printable(fill(rendered.text, recipient.values, html_escape=False), "plain", msg.policy))
    msg.attach(_quoted_printable(fill(rendered.html, recipient.values, html_escape=True), "html", msg.policy))
    return msg


def _quoted_printable(text: str, subtype: str, policy: email.policy.Policy) -> EmailMessage:
    """One text part, quoted-printable in lines of at most 76 characters (RFC 2045).

    binascii's encoder is C (the email package's is Python and several times slower) and keeps
    to 76 columns, where spam filters score longer lines (the HTML is one long line).
    """
    part = EmailMessage(policy=policy)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii"))
    return part


def eml_previews(envelope: Envelope, recipients: Sequence[Recipient], limit: int) -> list[Preview]:
    """The first `limit` recipients' messages as `.eml` files, for a dry run."""
    slug = envelope.rendered.slug
    return [Preview(f"{slug}-{index:03d}.eml", build_message(envelope, recipient).as_bytes())
            for index, recipient in enumerate(recipients[:limit], start=1)]
