"""SMTP with smtplib: a pool of connections, each sending one message at a time, one per recipient.

Each worker thread keeps its own connection (`[smtp] connections` of them) and reconnects when
the server hangs up or answers 421. MAIL, RCPT and DATA go out in one write where the server
offers PIPELINING, one by one elsewhere; either way the message body is sent only after DATA is
accepted, so a connection lost before then has handed over nothing (retried), while one lost
during the body is reported unknown. 4xx answers are temporary: the recipient is retried with
back-off in this run, then deferred to a later one; 5xx answers are permanent. An address with
a non-ASCII local part goes out with SMTPUTF8 where the server offers it, and fails on its own
with a clear reason where it does not. No exception about one recipient leaves the batch.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Sequence

from ..config import SmtpSettings
from ..errors import ProviderAuthError, ProviderUnavailable
from ..pacing import Pacer
from .base import Envelope, Preview, Recipient, Result
from .mime import MessageTemplate, build_message, eml_previews, needs_smtputf8, smtp_data

RECONNECT_TRIES = 3


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


class _Answer(Exception):
    """How one SMTP transaction ended, when it did not end in 250."""

    def __init__(self, kind: str, message: str, *, reconnect: bool = False, code: str = "none") -> None:
        super().__init__(message)
        self.kind, self.message, self.reconnect = kind, message, reconnect  # kind: temporary | permanent | unknown
        self.code = code  # the server's reply code; "none" when the connection was lost


def _classify(step: str, code: int, reply: bytes | str) -> _Answer:
    text = f"{code} {_text(reply)} (at {step})"
    if 400 <= code < 500:
        return _Answer("temporary", text, reconnect=code == 421, code=str(code))
    return _Answer("permanent", text, code=str(code))


class SmtpProvider:
    reports_events = False  # a relay answers once; nothing comes back to count deliveries or opens
    # One message per batch: each result is recorded as its server answers, so a crash leaves at
    # most one unknown message per connection (the one whose body was on the wire).
    max_batch = 1

    def __init__(self, settings: SmtpSettings, password: str = "") -> None:
        self.settings = settings
        self.password = password
        self.max_in_flight = settings.connections
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[smtplib.SMTP] = set()
        self._template: MessageTemplate | None = None

    def prepare(self, pacer: Pacer) -> None:
        return None  # nothing to read before a send: limits come back in the server's 421s

    def check(self, envelope: Envelope) -> None:
        return None

    def preview(self, envelope: Envelope, recipients: Sequence[Recipient], limit: int) -> list[Preview]:
        """What a dry run writes: the first `limit` messages as `.eml` files."""
        return eml_previews(envelope, recipients, limit)

    # -- connections: one per thread ----------------------------------------------------------

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.security == "ssl":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout,
                                                      context=ssl.create_default_context())
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            # The body and the final "." are two writes (the lease is looked at between them): without
            # this, Nagle's algorithm holds the "." until the server's delayed ACK, 40 ms a message.
            if conn.sock is not None:  # connected by the constructor
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if s.security == "starttls":
                conn.starttls(context=ssl.create_default_context())
            conn.ehlo_or_helo_if_needed()
            if s.username:
                conn.login(s.username, self.password)
        except smtplib.SMTPAuthenticationError:
            raise ProviderAuthError(f"SMTP server {s.host}:{s.port} refused the login for {s.username!r}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise ProviderUnavailable(f"cannot reach SMTP server {s.host}:{s.port}: {exc}") from None
        with self._lock:
            self._open.add(conn)
        return conn

    def _connection(self, pacer: Pacer) -> smtplib.SMTP | None:
        """This thread's connection, made (with a few tries) when there is none; None when stopping."""
        conn: smtplib.SMTP | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        for attempt in range(RECONNECT_TRIES):
            try:
                self._local.conn = self._connect()
                return self._local.conn  # type: ignore[no-any-return]
            except ProviderUnavailable:
                if attempt == RECONNECT_TRIES - 1:
                    raise
                if not pacer.sleep(0.2 * 2 ** attempt):
                    return None
        return None

    def _drop(self) -> None:
        conn: smtplib.SMTP | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._open.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                conn.quit()

    # -- sending --------------------------------------------------------------------------------

    def send(self, envelope: Envelope, recipients: Sequence[Recipient], pacer: Pacer | None = None) -> list[Result]:
        """One result per recipient handed over; those left when the send is stopping get none."""
        pacer = pacer or Pacer()
        results: list[Result] = []
        for recipient in recipients:
            try:
                result = self._deliver(envelope, recipient, pacer)
            except ProviderUnavailable as exc:
                exc.partial = results
                raise
            if result is None:  # stopping: this one and the rest go back to pending
                break
            results.append(result)
        return results

    def _deliver(self, envelope: Envelope, recipient: Recipient, pacer: Pacer) -> Result | None:
        """Deliver one message, retrying temporary refusals; None when the send is stopping first."""
        s = self.settings
        utf8 = needs_smtputf8(envelope, recipient)
        last = ""
        for attempt in range(max(1, s.retries)):
            if attempt and not pacer.sleep(s.retry_backoff * 2 ** (attempt - 1)):
                return None
            if not pacer.wait():
                return None
            conn = self._connection(pacer)
            if conn is None:
                return None
            try:
                return self._attempt(conn, envelope, recipient, utf8, pacer)
            except _Answer as answer:  # a temporary refusal: try again
                last = answer.message
                if answer.reconnect:
                    self._drop()
                    pacer.pause(s.retry_backoff)  # the server asked us to slow down: every connection waits
        return Result(recipient.key, "deferred", error=f"{last}; tried {s.retries} times, left for a later run",
                      retry_in=s.retry_backoff * 2 ** max(1, s.retries))

    def _attempt(self, conn: smtplib.SMTP, envelope: Envelope, recipient: Recipient, utf8: bool,
                 pacer: Pacer) -> Result | None:
        """One try over `conn`: the recipient's result, or None when the send is stopping; a temporary
        refusal is raised as its _Answer."""
        if utf8 and not conn.has_extn("smtputf8"):
            return Result(recipient.key, "failed", error="the address is not ASCII and the SMTP server does not "
                                                         "offer SMTPUTF8")
        try:
            data, message_id = self._message(envelope, recipient)
        except Exception as exc:  # noqa: BLE001 - one recipient's message, never the batch
            return Result(recipient.key, "failed", error=f"cannot build the message: {exc}")
        started = time.monotonic()
        try:
            if not self._transaction(conn, recipient.return_path or envelope.from_email, recipient.email, data, utf8,
                                     pacer):
                return None
        except (smtplib.SMTPException, UnicodeError, ValueError) as exc:  # anything else about this one message
            pacer.meter.request("refused", time.monotonic() - started)
            self._reset(conn)
            return Result(recipient.key, "failed", error=f"{type(exc).__name__}: {exc}")
        except _Answer as answer:
            pacer.meter.request(answer.code, time.monotonic() - started)
            if answer.kind == "temporary":
                raise
            return Result(recipient.key, "unknown" if answer.kind == "unknown" else "failed", error=answer.message)
        pacer.meter.request("250", time.monotonic() - started)
        return Result(recipient.key, "sent", message_id=message_id)

    def _message(self, envelope: Envelope, recipient: Recipient) -> tuple[bytes, str]:
        """The DATA bytes and Message-ID of one recipient's copy: from the issue's template, or a fresh
        build for what the template cannot make."""
        with self._lock:
            if self._template is None or self._template.envelope is not envelope:
                self._template = MessageTemplate(envelope)
            template = self._template
        made = template.data(recipient)
        if made is None:
            message = build_message(envelope, recipient)
            made = smtp_data(message.as_bytes()), str(message["Message-ID"])
        return made

    def _transaction(self, conn: smtplib.SMTP, sender: str, rcpt: str, data: bytes, utf8: bool,
                     pacer: Pacer) -> bool:
        """MAIL, RCPT, DATA and the body (`data`, dot-stuffed); True on 250, raises _Answer otherwise.

        False when the send is stopping (or the worker's lease may be gone) once DATA is accepted:
        the body is not sent, so nothing was handed over."""
        try:
            replies = self._envelope_commands(conn, sender, rcpt, utf8)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()  # nothing was handed over: another connection may take it
            raise _Answer("temporary", f"connection lost before DATA: {exc}", reconnect=True) from None
        refused = next(((step, code, reply) for step, code, reply in replies
                        if code != (354 if step == "DATA" else 250)), None)
        if refused is not None:
            if replies[-1][0] == "DATA" and replies[-1][1] == 354:  # a server that took DATA anyway
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    conn.send(b".\r\n")
                    conn.getreply()
            self._reset(conn)
            raise _classify(*refused)
        if pacer.stopped:  # a process resumed after SIGSTOP may have lost its rows meanwhile: look again
            self._drop()  # hanging up before the final "." is how a message is withdrawn during DATA
            return False
        try:
            conn.send(data)
            if _stopped_meanwhile(pacer):  # stopped (SIGSTOP) while the body went out, resumed past the lease:
                self._drop()  # the final "." is not sent, so the server discards the message
                return False
            conn.send(b".\r\n")
            code, reply = conn.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise _Answer("unknown", f"connection lost during DATA: {exc}") from None
        if code != 250:
            self._reset(conn)
            raise _classify("end of DATA", code, reply)
        return True

    @staticmethod
    def _envelope_commands(conn: smtplib.SMTP, sender: str, rcpt: str, utf8: bool) -> list[tuple[str, int, bytes]]:
        """MAIL FROM, RCPT TO and DATA, pipelined when the server offers it: (command, code, reply) of each sent."""
        options = ["SMTPUTF8"] if utf8 else []
        if utf8 and conn.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if conn.has_extn("pipelining"):
            extra = "".join(f" {o}" for o in options)
            mail, to = smtplib.quoteaddr(sender), smtplib.quoteaddr(rcpt)
            conn.send(f"MAIL FROM:{mail}{extra}\r\nRCPT TO:{to}\r\nDATA\r\n".encode())
            return [("MAIL FROM", *conn.getreply()), ("RCPT TO", *conn.getreply()), ("DATA", *conn.getreply())]
        replies = [("MAIL FROM", *conn.mail(sender, options))]
        if replies[-1][1] < 400:
            replies.append(("RCPT TO", *conn.rcpt(rcpt)))
        if replies[-1][1] < 400:
            replies.append(("DATA", *conn.docmd("DATA")))
        return replies

    def _reset(self, conn: smtplib.SMTP) -> None:
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()


def _stopped_meanwhile(pacer: Pacer) -> bool:
    """Asked again after a long write: a process resumed after SIGSTOP may have lost its rows meanwhile."""
    return pacer.stopped
