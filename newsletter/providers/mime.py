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
import re
import secrets
import sys
from collections.abc import Sequence
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from types import MappingProxyType
from typing import Any

from ..placeholders import PATTERN, fill, one_line
from .base import Envelope, Preview, Recipient, list_unsubscribe


def _header(value: str) -> str:
    return one_line(value).strip()


class _Policy(email.policy.EmailPolicy):
    """CRLF line ends (smtplib does not convert bytes), and headers folded only past RFC 5322's hard
    limit: a folded List-Unsubscribe would be turned into an encoded word that clients cannot use.

    A Subject that needs encoded words is the exception: the email package would write one word as
    long as the subject on one line (or words of 76 characters where it folds), where RFC 2047
    allows 75; it gets words of at most 75, one to a line of at most 76."""

    def fold(self, name: str, value: Any) -> str:
        return _encoded(name, str(value), self.linesep) if _needs_words(name, value) else super().fold(name, value)

    def fold_binary(self, name: str, value: Any) -> bytes:
        if _needs_words(name, value):
            return _encoded(name, str(value), self.linesep).encode("ascii")
        return super().fold_binary(name, value)


def _needs_words(name: str, value: Any) -> bool:
    return name.lower() == "subject" and not str(value).isascii()


def _encoded(name: str, text: str, linesep: str) -> str:
    return f"{name}: {Header(text, 'utf-8', maxlinelen=76, header_name=name).encode(linesep=linesep)}{linesep}"


_LONGEST = 998
POLICY = _Policy(linesep="\r\n", max_line_length=_LONGEST)
# For an address that is not ASCII (RFC 6532): headers in UTF-8, never an encoded word in an address.
UTF8_POLICY = email.policy.SMTPUTF8.clone(max_line_length=_LONGEST)


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


def _headers(envelope: Envelope, recipient: Recipient, utf8: bool, date: str,
             message_id: str) -> list[tuple[str, Any, bool]]:
    """The message's headers in order: (name, value, whether it is the recipient's own)."""
    rendered = envelope.rendered
    personal_subject = "%%" in rendered.subject
    headers: list[tuple[str, Any, bool]] = [
        ("Subject", _header(envelope.subject_prefix + fill(rendered.subject, recipient.values, html_escape=False)),
         personal_subject),
        ("From", envelope.from_header, False),
        ("To", _to(recipient, utf8), True),
    ]
    if envelope.reply_to:
        headers.append(("Reply-To", envelope.reply_to, False))
    headers += [("Date", date, True), ("Message-ID", message_id, True), ("List-Id", _header(envelope.list_id), False)]
    if recipient.unsubscribe_url:  # transactional mail (a confirmation request) has none
        headers += [("List-Unsubscribe", list_unsubscribe(envelope, recipient.unsubscribe_url), True),
                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click", False)]
    if envelope.feedback_id:
        headers.append(("Feedback-ID", _header(envelope.feedback_id), False))
    if envelope.complaint_address:
        headers += [("CFBL-Address", f"{envelope.complaint_address}; report=arf", False),
                    ("CFBL-Feedback-ID", _header(envelope.feedback_id), False)]
    for key, value in {**envelope.custom_args, **recipient.custom_args}.items():  # read back from returned copies
        headers.append((f"X-Newsletter-{key.title()}", _header(value), key in recipient.custom_args))
    headers.append(("MIME-Version", "1.0", False))
    return headers


def _new_date() -> str:
    return formatdate(localtime=False, usegmt=True)


def _new_message_id(envelope: Envelope) -> str:
    return make_msgid(domain=envelope.from_email.rpartition("@")[2] or None)


def build_message(envelope: Envelope, recipient: Recipient, *, date: str = "", message_id: str = "",
                  boundary: str = "") -> EmailMessage:
    """The complete message for one recipient, exactly as it goes over SMTP (the date, message id and
    multipart boundary are made here unless given)."""
    rendered = envelope.rendered
    utf8 = needs_smtputf8(envelope, recipient)
    msg = EmailMessage(policy=UTF8_POLICY if utf8 else POLICY)
    for name, value, _personal in _headers(envelope, recipient, utf8, date or _new_date(),
                                           message_id or _new_message_id(envelope)):
        msg[name] = value
    msg.make_alternative()
    if boundary:
        msg.set_boundary(boundary)
    msg.attach(_quoted_printable(fill(rendered.text, recipient.values, html_escape=False), "plain", msg.policy))
    msg.attach(_quoted_printable(fill(rendered.html, recipient.values, html_escape=True), "html", msg.policy))
    return msg


def _qp(text: str) -> bytes:
    """Quoted-printable in lines of at most 76 characters (RFC 2045), the one encoder of both builds.

    binascii's encoder is C (the email package's is Python and several times slower) and keeps
    to 76 columns, where spam filters score longer lines (the HTML is one long line).
    """
    return binascii.b2a_qp(text.encode("utf-8"), istext=True)


def _quoted_printable(text: str, subtype: str, policy: email.policy.Policy) -> EmailMessage:
    """One text part, quoted-printable (see `_qp`)."""
    part = EmailMessage(policy=policy)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(_qp(text).decode("ascii"))
    return part


_LEADING_DOT = re.compile(rb"(?m)^\.")


def smtp_data(message: bytes) -> bytes:
    """A message as SMTP's DATA carries it: every line starting with "." doubled (RFC 5321 4.5.2), ending
    in CRLF (the final "." line goes after it)."""
    data = _LEADING_DOT.sub(b"..", message)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


class _Part:
    """One text part's quoted-printable payload as SMTP's DATA carries it, the lines without a
    placeholder encoded once.

    Quoted-printable is line by line: binascii's encoder starts every line afresh (soft breaks,
    trailing spaces, a lone "."), so encoding the lines apart gives the bytes of encoding them
    together, as long as the text has no CR (whose CRLF the encoder would then copy).
    """

    def __init__(self, template: str, *, html_escape: bool) -> None:
        self.html_escape = html_escape
        self.pieces: list[bytes | str] = []  # encoded lines, or a source line with placeholders
        static: list[str] = []
        lines = template.split("\n")
        for number, line in enumerate(lines):
            line += "\n" if number < len(lines) - 1 else ""
            if PATTERN.search(line):
                if static:
                    self.pieces.append(self._encode("".join(static)))
                    static = []
                self.pieces.append(line)
            else:
                static.append(line)
        if static:
            self.pieces.append(self._encode("".join(static)))

    @staticmethod
    def _encode(text: str) -> bytes:
        if not text:
            return b""
        # The text has no CR (see `usable`; values are made one line), so neither has its encoding: every
        # line ends in LF alone, and each piece starts a line.
        data = _qp(text).replace(b"\n", b"\r\n").replace(b"\n.", b"\n..")
        return b"." + data if data.startswith(b".") else data

    def data(self, values: dict[str, str]) -> bytes:
        return b"".join([piece if isinstance(piece, bytes) else
                         self._encode(fill(piece, values, html_escape=self.html_escape)) for piece in self.pieces])


# Personal header values that the email package writes back as they are (one line, `Name: value`) and
# reads back the same: a copy's own headers are written directly when they are one of these, since
# parsing and folding them took most of a copy's time (a test holds both ways to each other).
_ATOMS = r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
_ADDRESS = rf"{_ATOMS}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_TEXT = re.compile(r"(?:(?!=\?)[!-~])+(?: (?:(?!=\?)[!-~])+)*")  # printable ASCII, single spaces, no encoded word
_PLAIN = MappingProxyType({
    "To": re.compile(rf"(?:[A-Za-z0-9]+(?: [A-Za-z0-9]+)* <{_ADDRESS}>|{_ADDRESS})"),
    "Message-ID": re.compile(rf"<{_ATOMS}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*>"),
    "Subject": _TEXT,
    "List-Unsubscribe": _TEXT,
})


class MessageTemplate:
    """One envelope's message, built and encoded once; each recipient's copy is the same bytes with
    that recipient's headers and placeholder lines filled in. Byte for byte what `build_message`
    gives for the same date, message id and boundary (a test checks it), at a tenth of the cost: a
    fresh build re-encodes 40 KB of HTML for each recipient though only a few lines differ."""

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope
        rendered = envelope.rendered
        self.usable = "\r" not in rendered.text and "\r" not in rendered.html
        self._text = _Part(rendered.text, html_escape=False)
        self._html = _Part(rendered.html, html_escape=True)
        # As the email package makes one; quoted-printable encodes every "=", so no part can hold it.
        self.boundary = "=" * 15 + f"{secrets.randbelow(sys.maxsize):019d}" + "=="
        shell = EmailMessage(policy=POLICY)
        shell.make_alternative()
        shell.set_boundary(self.boundary)
        self._content_type = b"".join(POLICY.fold_binary(name, value) for name, value in shell.raw_items()
                                      if name == "Content-Type")
        parts = [_quoted_printable("", subtype, POLICY) for subtype in ("plain", "html")]
        self._part_heads = [b"".join(POLICY.fold_binary(name, value) for name, value in part.raw_items()) + b"\r\n"
                            for part in parts]
        self._between = f"\r\n--{self.boundary}\r\n".encode()  # the blank line, or a part's end, and the next
        self._end = f"\r\n--{self.boundary}--\r\n".encode()
        self._shared: dict[tuple[str, str], bytes] = {}
        self._date: tuple[str, bytes] = ("", b"")

    def _header(self, name: str, value: Any, personal: bool) -> tuple[bytes, str]:
        """One header as the generator writes it, and its value as the message reads it back."""
        key = (name, str(value))
        if not personal and key in self._shared:
            return self._shared[key], ""
        if name == "Date" and self._date[0] == value:
            return self._date[1], ""
        plain = _PLAIN.get(name, _TEXT if name.startswith("X-Newsletter-") else None)
        if plain is not None and plain.fullmatch(key[1]) and len(name) + len(key[1]) < _LONGEST - 1:
            return f"{name}: {key[1]}\r\n".encode("ascii"), key[1]
        stored = POLICY.header_store_parse(name, value)
        folded = POLICY.fold_binary(*stored)
        if not personal:
            self._shared[key] = folded
        elif name == "Date":
            self._date = (value, folded)
        return folded, str(stored[1])

    def data(self, recipient: Recipient, *, date: str = "", message_id: str = "") -> tuple[bytes, str] | None:
        """(the DATA bytes, the Message-ID) of this recipient's copy; None when only a fresh build can make
        it (an address that needs SMTPUTF8, an issue with CRs in its text)."""
        if not self.usable or needs_smtputf8(self.envelope, recipient):
            return None
        out: list[bytes] = []
        mid = ""
        for name, value, personal in _headers(self.envelope, recipient, False, date or _new_date(),
                                              message_id or _new_message_id(self.envelope)):
            folded, read = self._header(name, value, personal)
            out.append(folded)
            mid = read if name == "Message-ID" else mid
        out += [self._content_type, self._between, self._part_heads[0], self._text.data(recipient.values),
                self._between, self._part_heads[1], self._html.data(recipient.values), self._end]
        return b"".join(out), mid


def eml_previews(envelope: Envelope, recipients: Sequence[Recipient], limit: int) -> list[Preview]:
    """The first `limit` recipients' messages as `.eml` files, for a dry run."""
    slug = envelope.rendered.slug
    return [Preview(f"{slug}-{index:03d}.eml", build_message(envelope, recipient).as_bytes())
            for index, recipient in enumerate(recipients[:limit], start=1)]
