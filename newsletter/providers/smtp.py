"""SMTP with smtplib: one message per recipient over a reused connection.

Messages are built by `mime` (multipart/alternative: text, then HTML).
Each message is sent as MAIL, RCPT and DATA separately, so a dropped connection before DATA is
known to have sent nothing (reconnect and retry), while one during DATA is reported unknown.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import time
from collections.abc import Sequence

from ..config import SmtpSettings
from ..errors import ProviderAuthError, ProviderUnavailable
from .base import Envelope, Preview, Recipient, Result
from .mime import build_message, eml_previews

RECONNECT_TRIES = 3


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


class SmtpProvider:
    name = "smtp"
    max_batch = 100

    def __init__(self, settings: SmtpSettings, password: str = "") -> None:
        self.settings = settings
        self.password = password
        self._conn: smtplib.SMTP | None = None

    def preview(self, envelope: Envelope, recipients: Sequence[Recipient], limit: int) -> list[Preview]:
        """What a dry run writes: the first `limit` messages as `.eml` files."""
        return eml_previews(envelope, recipients, limit)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.security == "ssl":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout,
                                                      context=ssl.create_default_context())
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
                if s.security == "starttls":
                    conn.starttls(context=ssl.create_default_context())
            conn.ehlo_or_helo_if_needed()
            if s.username:
                conn.login(s.username, self.password)
        except smtplib.SMTPAuthenticationError:
            raise ProviderAuthError(f"SMTP server {s.host}:{s.port} refused the login for {s.username!r}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise ProviderUnavailable(f"cannot reach SMTP server {s.host}:{s.port}: {exc}") from None
        return conn

    def _deliver(self, envelope: Envelope, recipient: Recipient) -> Result:
        msg = build_message(envelope, recipient)
        for attempt in range(RECONNECT_TRIES):
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            try:
                utf8 = not recipient.email.isascii() and conn.has_extn("smtputf8")
                code, reply = conn.mail(envelope.from_email, ["SMTPUTF8"] if utf8 else [])
                if code >= 400:
                    self._reset(conn)
                    return Result(recipient.key, "failed", error=f"MAIL FROM refused: {code} {_text(reply)}")
                code, reply = conn.rcpt(recipient.email)
                if code >= 400:
                    self._reset(conn)
                    return Result(recipient.key, "failed", error=f"{code} {_text(reply)}")
            except (smtplib.SMTPServerDisconnected, OSError):
                # Nothing was handed over yet: reconnect and try again.
                self._drop()
                time.sleep(0.1 * attempt)
                continue
            try:
                code, reply = conn.data(msg.as_bytes())
            except smtplib.SMTPDataError as exc:
                self._reset(conn)
                return Result(recipient.key, "failed", error=f"{exc.smtp_code} {_text(exc.smtp_error)}")
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self._drop()
                return Result(recipient.key, "unknown", error=f"connection lost during DATA: {exc}")
            if code != 250:  # smtplib raises only for the 354 step; the final answer is ours to check
                self._reset(conn)
                return Result(recipient.key, "failed", error=f"{code} {_text(reply)}")
            return Result(recipient.key, "sent", message_id=str(msg["Message-ID"]))
        server = f"{self.settings.host}:{self.settings.port}"
        raise ProviderUnavailable(f"SMTP server {server} keeps dropping the connection")

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        results: list[Result] = []
        for recipient in recipients:
            try:
                results.append(self._deliver(envelope, recipient))
            except ProviderUnavailable as exc:
                exc.partial = results
                raise
        return results

    def _reset(self, conn: smtplib.SMTP) -> None:
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._conn.quit()
            self._conn = None

