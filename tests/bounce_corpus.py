"""Reports in the shapes real MTAs send, each built around a message the project really sent.

`original` is the raw message as the SMTP test server received it, with the `Return-Path` the
receiving MTA adds from the envelope sender (our VERP address). Each function returns the bytes of
the report that would arrive at the bounce mailbox: Postfix, Exim, Gmail, Microsoft 365 (a hard
bounce and its DMARC refusal), Yahoo's policy refusal, qmail's and Sendmail's text bounces, an ARF
complaint from a feedback loop, an out-of-office reply, a challenge-response, spam sent to the
bounce address, a malformed report, a 10 MB report and a bounce in a non-UTF-8 charset.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid


def with_return_path(raw: bytes, mail_from: str) -> bytes:
    """The message as the receiving MTA stores it: the envelope sender as Return-Path on top."""
    return f"Return-Path: <{mail_from}>\r\n".encode() + raw


def _original(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _fields_part(subtype: str, fields: str) -> Message:
    """A message/delivery-status or message/feedback-report part: blocks of fields, as an MTA writes them."""
    return email.message_from_string(f"Content-Type: message/{subtype}\n\n{fields}", policy=email.policy.compat32)


def _envelope(report: Message, *, to: str, sender: str, subject: str) -> Message:
    report["From"] = sender
    report["To"] = to
    report["Subject"] = subject
    report["Date"] = formatdate()
    report["Message-ID"] = make_msgid(domain="mta.example.net")
    report["Auto-Submitted"] = "auto-replied"
    return report


def dsn(raw: bytes, *, recipient: str, status: str, diagnostic: str, action: str = "failed",
        mta: str = "mx.example.org", sender: str = "MAILER-DAEMON@mx.example.org",
        text: str = "This is the mail system at host mx.example.org.", headers_only: bool = False,
        global_status: bool = False) -> bytes:
    """An RFC 3464 delivery status notification (Postfix, Exim, Gmail, Microsoft 365 all send one)."""
    original = _original(raw)
    to = original["Return-Path"].strip("<>") if original["Return-Path"] else original["From"]
    report = MIMEMultipart("report", report_type="delivery-status")
    _envelope(report, to=to, sender=sender, subject="Undelivered Mail Returned to Sender")
    report.attach(MIMEText(f"{text}\n\n<{recipient}>: {diagnostic}\n"))
    fields = (f"Reporting-MTA: dns; {mta}\nArrival-Date: {formatdate()}\n\n"
              f"Final-Recipient: rfc822; {recipient}\nOriginal-Recipient: rfc822;{recipient}\n"
              f"Action: {action}\nStatus: {status}\nRemote-MTA: dns; mx.{recipient.rpartition('@')[2]}\n"
              f"Diagnostic-Code: smtp; {diagnostic}\n")
    report.attach(_fields_part("global-delivery-status" if global_status else "delivery-status", fields))
    if headers_only:
        copy = MIMEBase("text", "rfc822-headers")
        copy.set_payload("".join(f"{k}: {v}\n" for k, v in original.items()))
        report.attach(copy)
    else:
        report.attach(MIMEMessage(original))
    return report.as_bytes()


def postfix_unknown_user(raw: bytes, recipient: str) -> bytes:
    return dsn(raw, recipient=recipient, status="5.1.1",
               diagnostic=f"550 5.1.1 <{recipient}>: Recipient address rejected: User unknown in virtual mailbox "
                          f"table")


def exim_mailbox_full(raw: bytes, recipient: str) -> bytes:
    return dsn(raw, recipient=recipient, status="5.2.2", mta="exim.example.org",
               diagnostic="552 5.2.2 Mailbox full: user is over quota",
               text="This message was created automatically by mail delivery software.")


def gmail_no_such_user(raw: bytes, recipient: str) -> bytes:
    return dsn(raw, recipient=recipient, status="5.1.1", mta="mx.google.com",
               sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
               diagnostic="550-5.1.1 The email account that you tried to reach does not exist. Please try "
                          "double-checking the recipient's email address for typos or unnecessary spaces. "
                          "https://support.google.com/mail/?p=NoSuchUser d2si1234567qkb.123 - gsmtp")


def gmail_unauthenticated(raw: bytes, recipient: str) -> bytes:
    return dsn(raw, recipient=recipient, status="5.7.26", mta="mx.google.com",
               sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
               diagnostic="550-5.7.26 This mail is unauthenticated, which poses a security risk to the sender "
                          "and Gmail users, and has been blocked. The sender must authenticate with at least one "
                          "of SPF or DKIM. - gsmtp")


def microsoft_dmarc(raw: bytes, recipient: str) -> bytes:
    return dsn(raw, recipient=recipient, status="5.7.515", mta="outlook.com",
               sender="postmaster@outlook.com",
               diagnostic="550 5.7.515 Access denied, sending domain news.example.com doesn't meet the required "
                          "authentication level. The sender's domain in the 5322.From address doesn't meet the "
                          "authentication requirements defined for the sender.", headers_only=True)


def microsoft_no_domain(raw: bytes, recipient: str) -> bytes:
    return dsn(raw, recipient=recipient, status="5.1.10", mta="outlook.com", sender="postmaster@outlook.com",
               diagnostic="550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
               global_status=True)


def yahoo_policy(raw: bytes, recipient: str) -> bytes:
    return dsn(raw, recipient=recipient, status="5.7.9", mta="mta.yahoo.com",
               diagnostic="554 5.7.9 Message not accepted for policy reasons. See "
                          "https://postmaster.yahooinc.com/error-codes")


def delayed(raw: bytes, recipient: str) -> bytes:
    return dsn(raw, recipient=recipient, status="4.4.1", action="delayed",
               diagnostic="connect to mx.example.org[192.0.2.1]:25: Connection timed out")


def qmail(raw: bytes, recipient: str) -> bytes:
    original = _original(raw)
    body = ("Hi. This is the qmail-send program at mail.example.org.\n"
            "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
            "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
            f"<{recipient}>:\n192.0.2.7 does not like recipient.\n"
            "Remote host said: 550 sorry, no mailbox here by that name. (#5.1.1)\nGiving up on 192.0.2.7.\n\n"
            "--- Below this line is a copy of the message.\n\n") + raw.decode("utf-8", "replace")
    message = MIMEText(body)
    _envelope(message, to=original["Return-Path"].strip("<>"), sender="MAILER-DAEMON@mail.example.org",
              subject="failure notice")
    del message["Auto-Submitted"]
    return message.as_bytes()


def sendmail(raw: bytes, recipient: str) -> bytes:
    original = _original(raw)
    body = ("The original message was received at Tue, 1 Dec 2026 09:00:00 GMT\nfrom localhost\n\n"
            "   ----- The following addresses had permanent fatal errors -----\n"
            f"<{recipient}>\n    (reason: 550 5.1.1 <{recipient}>... User unknown)\n\n"
            "   ----- Transcript of session follows -----\n... while talking to mx.example.org.:\n")
    message = MIMEText(body)
    _envelope(message, to=original["Return-Path"].strip("<>"), sender="Mail Delivery Subsystem <MAILER-DAEMON>",
              subject="Returned mail: see transcript for details")
    del message["Auto-Submitted"]
    return message.as_bytes()


def arf(raw: bytes, recipient: str, *, feedback_type: str = "abuse") -> bytes:
    """An RFC 5965 complaint, as a feedback loop (Yahoo's, Microsoft's JMRP) sends one."""
    original = _original(raw)
    report = MIMEMultipart("report", report_type="feedback-report")
    _envelope(report, to="fbl@news.example.com", sender="feedback@arf.mail.yahoo.com",
              subject="FW: " + str(original["Subject"]))
    del report["Auto-Submitted"]
    report.attach(MIMEText("This is an email abuse report for an email message received from IP 192.0.2.25."))
    report.attach(_fields_part("feedback-report", f"Feedback-Type: {feedback_type}\n"
                                                  "User-Agent: Yahoo!-Mail-Feedback/2.0\nVersion: 1\n"
                       f"Original-Mail-From: <{original['Return-Path'].strip('<>')}>\n"
                       f"Original-Rcpt-To: <{recipient}>\nArrival-Date: {formatdate()}\n"))
    report.attach(MIMEMessage(original))
    return report.as_bytes()


def out_of_office(raw: bytes, recipient: str) -> bytes:
    message = EmailMessage()
    message["From"] = recipient
    message["To"] = _original(raw)["Return-Path"].strip("<>")
    message["Subject"] = "Automatic reply: " + str(_original(raw)["Subject"])
    message["Auto-Submitted"] = "auto-replied"
    message["X-Auto-Response-Suppress"] = "All"
    message["Message-ID"] = make_msgid()
    message.set_content("I am out of the office until Monday and will reply when I am back.")
    return message.as_bytes()


def challenge(raw: bytes, recipient: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"Spam Arrest <challenge@{recipient.rpartition('@')[2]}>"
    message["To"] = _original(raw)["Return-Path"].strip("<>")
    message["Subject"] = "Please confirm your message"
    message["Message-ID"] = make_msgid()
    message.set_content("I'm protecting myself from spam. Click the link below to verify that you are a person.")
    return message.as_bytes()


def spam() -> bytes:
    message = EmailMessage()
    message["From"] = "Prize Desk <winner@lottery.example>"
    message["To"] = "bounces@news.example.com"
    message["Subject"] = "You have won!"
    message["Message-ID"] = make_msgid()
    message.set_content("Send us your bank details to claim the prize.")
    return message.as_bytes()


def malformed() -> bytes:
    return (b"From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered Mail\r\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"x\"\r\n\r\n"
            b"--x\r\nContent-Type: text/plain\r\n\r\nsomething went wrong\r\n"
            b"--x\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
            b"Action: failed\r\n--")


def huge(raw: bytes, recipient: str) -> bytes:
    """A 10 MB report: the returned copy carries a large attachment."""
    report = email.message_from_bytes(postfix_unknown_user(raw, recipient), policy=email.policy.compat32)
    filler = MIMEBase("application", "octet-stream")
    filler.set_payload("A" * (10 * 1024 * 1024))
    report.attach(filler)
    return report.as_bytes()


def latin1(raw: bytes, recipient: str) -> bytes:
    """A bounce from a German MTA in ISO-8859-1."""
    body = (f"Die Nachricht konnte nicht zugestellt werden: Empfänger unbekannt.\n\n<{recipient}>:\n"
            "    550 5.1.1 Benutzer unbekannt (user unknown)\nDies ist ein permanenter Fehler.\n")
    message = MIMEText(body, "plain", "iso-8859-1")
    _envelope(message, to=_original(raw)["Return-Path"].strip("<>"), sender="MAILER-DAEMON@mx.example.de",
              subject="Unzustellbar: Undelivered Mail")
    return message.as_bytes()
